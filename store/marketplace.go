package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/models"
)

// The marketplace: what customers can see of the providers' product publishes. A publish is
// listed while it is PUBLISHED (with a published_at) and its provider tenant is active; a
// private one only to the customer tenants the provider invited.

// MarketFilter filters marketplace lists.
type MarketFilter struct {
	// Q is searched, case-insensitively, in the product name and description.
	Q string
	// Category matches one of the product's categories, case-insensitively.
	Category    string
	Environment string
	// Customer, when set, adds the private publishes this customer tenant is invited to.
	Customer *uuid.UUID
}

// MarketProduct is the product part of a marketplace item.
type MarketProduct struct {
	ID          uuid.UUID          `json:"id"`
	Name        string             `json:"name"`
	Version     string             `json:"version"`
	Description string             `json:"description"`
	Categories  models.StringArray `json:"categories"`
	DocsURL     string             `json:"docs_url"`
	LogoURL     string             `json:"logo_url"`
}

// MarketProvider is the provider tenant of a marketplace item.
type MarketProvider struct {
	Name string `json:"name"`
}

// MarketPlan is a plan as the marketplace shows it.
type MarketPlan struct {
	ID          uuid.UUID                         `json:"id"`
	Name        string                            `json:"name"`
	Description string                            `json:"description"`
	RateLimit   models.JSON[models.PlanRateLimit] `json:"rate_limit"`
	Quota       models.JSON[*models.PlanQuota]    `json:"quota"`
}

// MarketItem is one product publish in the marketplace; ID is the publish id (what a customer
// subscribes to).
type MarketItem struct {
	ID               uuid.UUID      `json:"id"`
	Product          MarketProduct  `json:"product"`
	Provider         MarketProvider `json:"provider"`
	Environment      string         `json:"environment"`
	Hostname         string         `json:"hostname"`
	Visibility       string         `json:"visibility"`
	AuthMode         string         `json:"auth_mode"`
	ApprovalRequired bool           `json:"approval_required"`
	PublishedAt      time.Time      `json:"published_at"`
	Plans            []MarketPlan   `json:"plans"`
}

// marketRow is the flat row the marketplace query returns.
type marketRow struct {
	ID                 uuid.UUID
	ProductID          uuid.UUID
	ProductName        string
	ProductVersion     string
	ProductDescription string
	Categories         models.StringArray
	DocsURL            string
	LogoURL            string
	ProviderName       string
	Environment        string
	Hostname           string
	Visibility         string
	AuthMode           string
	ApprovalRequired   bool
	PublishedAt        time.Time
}

// PageKey orders the marketplace by publish time, newest first.
func (r marketRow) PageKey() (time.Time, uuid.UUID) { return r.PublishedAt, r.ID }

const marketColumns = `p.id, p.product_id, pr.name AS product_name, pr.version AS product_version,
	pr.description AS product_description, pr.categories, pr.docs_url, pr.logo_url, t.name AS provider_name,
	p.environment, p.hostname, p.visibility, p.auth_mode, p.approval_required, p.published_at`

// visiblePublishes is product_publishes p (joined to its provider tenant t) narrowed to the
// publishes customer (nil: anonymous) may see.
func visiblePublishes(db *gorm.DB, customer *uuid.UUID) *gorm.DB {
	q := db.Table("product_publishes AS p").
		Joins("JOIN tenants t ON t.id = p.tenant_id").
		Where("p.status = ? AND p.published_at IS NOT NULL AND t.status = ?", models.PublishPublished, models.TenantActive)
	if customer == nil {
		return q.Where("p.visibility = ?", models.VisibilityPublic)
	}
	return q.Where(`(p.visibility = ? OR EXISTS (SELECT 1 FROM publish_invitations i
		WHERE i.publish_id = p.id AND i.customer_tenant_id = ?))`, models.VisibilityPublic, *customer)
}

// likePattern makes a case-insensitive substring pattern of s with LIKE's wildcards escaped.
func likePattern(s string) string {
	return "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s) + "%"
}

// ListMarketplace lists the publishes f.Customer (or anyone) may see, newest published first,
// keyset-paginated on (published_at, id).
func (s *Store) ListMarketplace(ctx context.Context, f MarketFilter, p Page) ([]MarketItem, string, error) {
	q := visiblePublishes(s.db(ctx), f.Customer).Select(marketColumns).Joins("JOIN products pr ON pr.id = p.product_id")
	if f.Q != "" {
		pat := likePattern(f.Q)
		q = q.Where(`(pr.name ILIKE ? ESCAPE '\' OR pr.description ILIKE ? ESCAPE '\')`, pat, pat)
	}
	if f.Category != "" {
		q = q.Where("EXISTS (SELECT 1 FROM unnest(pr.categories) AS c(name) WHERE lower(c.name) = lower(?))", f.Category)
	}
	q = whereSet(q, "p.environment", f.Environment)
	if p.After != nil {
		q = q.Where("(p.published_at, p.id) < (?, ?)", p.After.CreatedAt, p.After.ID)
	}
	var rows []marketRow
	if err := q.Order("p.published_at DESC").Order("p.id DESC").Limit(p.Limit + 1).Scan(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	items, err := s.marketItems(ctx, rows)
	return items, next, err
}

// GetMarketplace returns one publish customer (nil: anonymous) may see; any other id is
// ErrNotFound.
func (s *Store) GetMarketplace(ctx context.Context, id uuid.UUID, customer *uuid.UUID) (MarketItem, error) {
	var rows []marketRow
	err := visiblePublishes(s.db(ctx), customer).Select(marketColumns).Joins("JOIN products pr ON pr.id = p.product_id").
		Where("p.id = ?", id).Limit(1).Scan(&rows).Error
	if err != nil {
		return MarketItem{}, err
	}
	if len(rows) == 0 {
		return MarketItem{}, ErrNotFound
	}
	items, err := s.marketItems(ctx, rows)
	if err != nil {
		return MarketItem{}, err
	}
	return items[0], nil
}

// marketItems builds the items of rows with the plans of their products (one query).
func (s *Store) marketItems(ctx context.Context, rows []marketRow) ([]MarketItem, error) {
	items := make([]MarketItem, len(rows))
	if len(rows) == 0 {
		return items, nil
	}
	productIDs := make([]uuid.UUID, 0, len(rows))
	for _, r := range rows {
		productIDs = append(productIDs, r.ProductID)
	}
	var plans []models.Plan
	if err := s.db(ctx).Where("product_id IN ?", productIDs).Order("created_at, id").Find(&plans).Error; err != nil {
		return nil, err
	}
	byProduct := map[uuid.UUID][]MarketPlan{}
	for _, pl := range plans {
		byProduct[pl.ProductID] = append(byProduct[pl.ProductID],
			MarketPlan{ID: pl.ID, Name: pl.Name, Description: pl.Description, RateLimit: pl.RateLimit, Quota: pl.Quota})
	}
	for i, r := range rows {
		cats := r.Categories
		if cats == nil {
			cats = models.StringArray{}
		}
		ps := byProduct[r.ProductID]
		if ps == nil {
			ps = []MarketPlan{}
		}
		items[i] = MarketItem{
			ID: r.ID,
			Product: MarketProduct{ID: r.ProductID, Name: r.ProductName, Version: r.ProductVersion, Description: r.ProductDescription,
				Categories: cats, DocsURL: r.DocsURL, LogoURL: r.LogoURL},
			Provider:    MarketProvider{Name: r.ProviderName},
			Environment: r.Environment, Hostname: r.Hostname, Visibility: r.Visibility, AuthMode: r.AuthMode,
			ApprovalRequired: r.ApprovalRequired, PublishedAt: r.PublishedAt, Plans: ps,
		}
	}
	return items, nil
}

// PublishVisibleTo returns the publish if customerTenantID may subscribe to it: it is
// PUBLISHED, its provider tenant is active, and it is public or the customer is invited.
// Anything else (withdrawn, private and not invited, unknown) is ErrNotFound.
func (s *Store) PublishVisibleTo(ctx context.Context, publishID, customerTenantID uuid.UUID) (models.ProductPublish, error) {
	var p models.ProductPublish
	err := visiblePublishes(s.db(ctx), &customerTenantID).Select("p.*").Where("p.id = ?", publishID).Take(&p).Error
	return p, notFound(err)
}

// ---- invitations ----

// Invitation is an invitation with the invited tenant's slug and name.
type Invitation struct {
	models.PublishInvitation
	TenantSlug string `json:"tenant_slug"`
	TenantName string `json:"tenant_name"`
}

// PageKey orders invitations, newest first.
func (i Invitation) PageKey() (time.Time, uuid.UUID) { return i.CreatedAt, i.CustomerTenantID }

// ErrNotCustomer refuses an invitation to a slug that is not an active customer tenant.
var ErrNotCustomer = errors.New("not an active customer tenant")

// CreateInvitation invites the active customer tenant with slug to a publish; a slug that is not
// one is ErrNotCustomer, an existing invitation ErrConflict.
func (s *Store) CreateInvitation(ctx context.Context, publishID uuid.UUID, slug, invitedBy string) (Invitation, error) {
	var out Invitation
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var t models.Tenant
		err := tx.Take(&t, "slug = ? AND type = ? AND status = ?", slug, models.TenantCustomer, models.TenantActive).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrNotCustomer
		}
		if err != nil {
			return err
		}
		inv := models.PublishInvitation{PublishID: publishID, CustomerTenantID: t.ID, InvitedBy: invitedBy}
		if err := tx.Create(&inv).Error; err != nil {
			return uniqueConflict(err)
		}
		out = Invitation{PublishInvitation: inv, TenantSlug: t.Slug, TenantName: t.Name}
		return nil
	})
	return out, err
}

func invitationQuery(db *gorm.DB, publishID uuid.UUID) *gorm.DB {
	return db.Table("publish_invitations AS i").
		Select("i.publish_id, i.customer_tenant_id, i.invited_by, i.created_at, t.slug AS tenant_slug, t.name AS tenant_name").
		Joins("JOIN tenants t ON t.id = i.customer_tenant_id").
		Where("i.publish_id = ?", publishID)
}

// ListInvitations lists a publish's invitations, newest first, keyset-paginated on
// (created_at, customer_tenant_id).
func (s *Store) ListInvitations(ctx context.Context, publishID uuid.UUID, p Page) ([]Invitation, string, error) {
	q := invitationQuery(s.db(ctx), publishID)
	if p.After != nil {
		q = q.Where("(i.created_at, i.customer_tenant_id) < (?, ?)", p.After.CreatedAt, p.After.ID)
	}
	var rows []Invitation
	if err := q.Order("i.created_at DESC").Order("i.customer_tenant_id DESC").Limit(p.Limit + 1).Scan(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// DeleteInvitation removes an invitation and returns it; none is ErrNotFound. Subscriptions
// made while the invitation stood are not touched.
func (s *Store) DeleteInvitation(ctx context.Context, publishID, customerTenantID uuid.UUID) (Invitation, error) {
	var rows []Invitation
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := invitationQuery(tx, publishID).Where("i.customer_tenant_id = ?", customerTenantID).Scan(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return ErrNotFound
		}
		return tx.Exec(`DELETE FROM publish_invitations WHERE publish_id = ? AND customer_tenant_id = ?`, publishID, customerTenantID).Error
	})
	if err != nil {
		return Invitation{}, err
	}
	return rows[0], nil
}
