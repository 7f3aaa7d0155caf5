package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// ---- gateway templates ----

// GatewayFilter filters gateway template lists.
type GatewayFilter struct{ Status, GatewayClass string }

// CreateGateway inserts a gateway template; a taken name is ErrConflict.
func (s *Store) CreateGateway(ctx context.Context, g *models.Gateway) error {
	return uniqueConflict(s.db(ctx).Create(g).Error)
}

// ListGateways lists a tenant's gateway templates, newest first.
func (s *Store) ListGateways(ctx context.Context, tenantID uuid.UUID, f GatewayFilter, p Page) ([]models.Gateway, string, error) {
	q := s.db(ctx).Model(&models.Gateway{}).Where("tenant_id = ?", tenantID)
	q = whereSet(q, "status", f.Status)
	q = whereSet(q, "gateway_class", f.GatewayClass)
	return page[models.Gateway](q, "gateways", p)
}

// GetGateway returns one gateway template of a tenant.
func (s *Store) GetGateway(ctx context.Context, tenantID, id uuid.UUID) (models.Gateway, error) {
	return getRow[models.Gateway](s.db(ctx), tenantID, id)
}

// UpdateGateway changes a gateway template under a row lock.
func (s *Store) UpdateGateway(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.Gateway) error) (before, after models.Gateway, err error) {
	return updateRow(s, ctx, tenantID, id, apply, nil)
}

// DeleteGateway deletes a gateway template; one a publish names is ErrInUse.
func (s *Store) DeleteGateway(ctx context.Context, tenantID, id uuid.UUID, guard func(models.Gateway) error) (models.Gateway, error) {
	return deleteRow(s, ctx, tenantID, id, guard, nil)
}

// ---- products ----

// ProductFilter filters product lists.
type ProductFilter struct{ Status string }

type productLink struct {
	ProductID    uuid.UUID
	APIServiceID uuid.UUID
}

// loadLinks fills APIServices of every product with one query, in the order they were given.
func loadLinks(tx *gorm.DB, tenantID uuid.UUID, ps []models.Product) error {
	if len(ps) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(ps))
	at := make(map[uuid.UUID]int, len(ps))
	for i := range ps {
		ids[i] = ps[i].ID
		at[ps[i].ID] = i
		ps[i].APIServices = []uuid.UUID{}
	}
	var links []productLink
	err := tx.Table("product_api_services").Select("product_id, api_service_id").
		Where("tenant_id = ? AND product_id IN ?", tenantID, ids).Order("product_id, position").Scan(&links).Error
	if err != nil {
		return err
	}
	for _, l := range links {
		i := at[l.ProductID]
		ps[i].APIServices = append(ps[i].APIServices, l.APIServiceID)
	}
	return nil
}

// checkServiceLinks proves every linked id is a service of the tenant and locks those
// services (FOR SHARE) so none is deleted before the links are written.
func checkServiceLinks(tx *gorm.DB, tenantID uuid.UUID, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	var found []uuid.UUID
	err := tx.Model(&models.APIService{}).Clauses(clause.Locking{Strength: "SHARE"}).
		Where("tenant_id = ? AND id IN ?", tenantID, ids).Pluck("id", &found).Error
	if err != nil {
		return err
	}
	have := make(map[uuid.UUID]bool, len(found))
	for _, id := range found {
		have[id] = true
	}
	var bad RefErrors
	for i, id := range ids {
		if !have[id] {
			bad = append(bad, RefError{Field: fmt.Sprintf("api_services[%d]", i), Message: "not an API service of this tenant"})
		}
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// writeLinks replaces the product's links with p.APIServices, keeping their order.
func writeLinks(tx *gorm.DB, p *models.Product) error {
	if err := tx.Exec(`DELETE FROM product_api_services WHERE tenant_id = ? AND product_id = ?`, p.TenantID, p.ID).Error; err != nil {
		return err
	}
	if len(p.APIServices) == 0 {
		return nil
	}
	rows := make([]map[string]any, len(p.APIServices))
	for i, id := range p.APIServices {
		rows[i] = map[string]any{"tenant_id": p.TenantID, "product_id": p.ID, "api_service_id": id, "position": i}
	}
	return tx.Table("product_api_services").Create(rows).Error
}

// requireActiveService refuses an active product none of whose linked services is active.
func requireActiveService(tx *gorm.DB, p *models.Product) error {
	if len(p.APIServices) == 0 {
		return ErrNoActiveService
	}
	var n int64
	err := tx.Model(&models.APIService{}).
		Where("tenant_id = ? AND id IN ? AND status = ?", p.TenantID, p.APIServices, models.ServiceActive).Count(&n).Error
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNoActiveService
	}
	return nil
}

// CreateProduct inserts a draft product with its links; an id that is not a service of the
// tenant is a RefError on api_services[i].
func (s *Store) CreateProduct(ctx context.Context, p *models.Product) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := checkServiceLinks(tx, p.TenantID, p.APIServices); err != nil {
			return err
		}
		if err := tx.Create(p).Error; err != nil {
			return err
		}
		return writeLinks(tx, p)
	})
}

// ListProducts lists a tenant's products, newest first, with their links: two queries a page.
func (s *Store) ListProducts(ctx context.Context, tenantID uuid.UUID, f ProductFilter, p Page) ([]models.Product, string, error) {
	q := s.db(ctx).Model(&models.Product{}).Where("tenant_id = ?", tenantID)
	q = whereSet(q, "status", f.Status)
	rows, next, err := page[models.Product](q, "products", p)
	if err != nil {
		return nil, "", err
	}
	return rows, next, loadLinks(s.db(ctx), tenantID, rows)
}

// GetProduct returns one product of a tenant with its links.
func (s *Store) GetProduct(ctx context.Context, tenantID, id uuid.UUID) (models.Product, error) {
	// One statement with its links: every publish request and every freeze reads its product.
	var rows []linkedProduct
	err := s.db(ctx).Raw(`SELECT p.*, coalesce((SELECT array_agg(l.api_service_id ORDER BY l.position) FROM product_api_services l
			WHERE l.tenant_id = p.tenant_id AND l.product_id = p.id), '{}') AS linked
		FROM products p WHERE p.tenant_id = ? AND p.id = ?`, tenantID, id).Scan(&rows).Error
	if err != nil {
		return models.Product{}, err
	}
	if len(rows) == 0 {
		return models.Product{}, ErrNotFound
	}
	p := rows[0].Product
	p.APIServices = []uuid.UUID(rows[0].Linked)
	if p.APIServices == nil {
		p.APIServices = []uuid.UUID{}
	}
	return p, nil
}

// linkedProduct is a row of GetProduct.
type linkedProduct struct {
	models.Product
	Linked models.UUIDArray
}

// lockProduct locks a product with its links; an archived product is ErrArchived.
func lockProduct(tx *gorm.DB, tenantID, id uuid.UUID) (models.Product, error) {
	p, err := lockRow[models.Product](tx, tenantID, id)
	if err != nil {
		return p, err
	}
	ps := []models.Product{p}
	if err := loadLinks(tx, tenantID, ps); err != nil {
		return p, err
	}
	if ps[0].Status == models.ProductArchived {
		return ps[0], ErrArchived
	}
	return ps[0], nil
}

// UpdateProduct changes a product and replaces its links whole. An archived product is
// ErrArchived; an active one must keep an active linked service (ErrNoActiveService).
func (s *Store) UpdateProduct(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.Product) error) (before, after models.Product, err error) {
	err = s.db(ctx).Transaction(func(tx *gorm.DB) error {
		cur, err := lockProduct(tx, tenantID, id)
		if err != nil {
			return err
		}
		before = cur
		before.APIServices = append([]uuid.UUID{}, cur.APIServices...)
		if err := apply(&cur); err != nil {
			return err
		}
		if err := checkServiceLinks(tx, tenantID, cur.APIServices); err != nil {
			return err
		}
		if cur.Status == models.ProductActive {
			if err := requireActiveService(tx, &cur); err != nil {
				return err
			}
		}
		if err := tx.Save(&cur).Error; err != nil {
			return err
		}
		if err := writeLinks(tx, &cur); err != nil {
			return err
		}
		after = cur
		return nil
	})
	return before, after, err
}

// productTransitions is the product state machine (archived is final).
var productTransitions = map[string][]string{
	models.ProductDraft:  {models.ProductActive},
	models.ProductActive: {models.ProductDraft, models.ProductArchived},
}

// SetProductStatus moves a product along draft -> active -> archived (and active -> draft).
// Activation needs an active linked service (ErrNoActiveService); guard may refuse the change
// (a product in use by a publish cannot go back to draft).
func (s *Store) SetProductStatus(ctx context.Context, tenantID, id uuid.UUID, to string, guard func(models.Product) error) (before, after models.Product, err error) {
	err = s.db(ctx).Transaction(func(tx *gorm.DB) error {
		cur, err := lockProduct(tx, tenantID, id)
		if err != nil {
			return err
		}
		before = cur
		allowed := false
		for _, t := range productTransitions[cur.Status] {
			allowed = allowed || t == to
		}
		if !allowed {
			return &TransitionError{From: cur.Status, To: to}
		}
		if guard != nil {
			if err := guard(cur); err != nil {
				return err
			}
		}
		cur.Status = to
		if to == models.ProductActive {
			if err := requireActiveService(tx, &cur); err != nil {
				return err
			}
		}
		cur.UpdatedAt = time.Now().UTC().Truncate(time.Microsecond)
		if err := tx.Model(&models.Product{}).Where("id = ?", id).
			Updates(map[string]any{"status": to, "updated_at": cur.UpdatedAt}).Error; err != nil {
			return err
		}
		after = cur
		return nil
	})
	return before, after, err
}

// DeleteProduct deletes a draft product with its links and plans. Archived products are
// ErrArchived (read-only, kept for the record); active ones go back to draft first.
func (s *Store) DeleteProduct(ctx context.Context, tenantID, id uuid.UUID, guard func(models.Product) error) (models.Product, error) {
	return deleteRow(s, ctx, tenantID, id, guard, func(_ *gorm.DB, cur models.Product) error {
		switch cur.Status {
		case models.ProductArchived:
			return ErrArchived
		case models.ProductActive:
			return &TransitionError{From: cur.Status, To: "deleted"}
		}
		return nil
	})
}

// ---- plans ----

// lockProductForPlans locks a product against status changes while one of its plans changes
// (FOR SHARE); an archived product is ErrArchived. The product is always locked before its
// plans, the order a product delete (which cascades to plans) takes too.
func lockProductForPlans(tx *gorm.DB, tenantID, productID uuid.UUID) error {
	var status string
	err := tx.Raw(`SELECT status FROM products WHERE tenant_id = ? AND id = ? FOR SHARE`, tenantID, productID).Scan(&status).Error
	if err != nil {
		return err
	}
	switch status {
	case "":
		return ErrNotFound
	case models.ProductArchived:
		return ErrArchived
	}
	return nil
}

// CreatePlan inserts a plan of a product; a taken name is ErrConflict.
func (s *Store) CreatePlan(ctx context.Context, pl *models.Plan) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockProductForPlans(tx, pl.TenantID, pl.ProductID); err != nil {
			return err
		}
		if pl.IsDefault {
			// One default per product: marking this one unmarks the other.
			if err := tx.Exec(`UPDATE plans SET is_default = false WHERE product_id = ? AND is_default`, pl.ProductID).Error; err != nil {
				return err
			}
		}
		return uniqueConflict(tx.Create(pl).Error)
	})
}

// ListPlans lists the plans of a product, newest first.
func (s *Store) ListPlans(ctx context.Context, tenantID, productID uuid.UUID, p Page) ([]models.Plan, string, error) {
	var ok bool
	err := s.db(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM products WHERE tenant_id = ? AND id = ?)`, tenantID, productID).Scan(&ok).Error
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", ErrNotFound
	}
	q := s.db(ctx).Model(&models.Plan{}).Where("tenant_id = ? AND product_id = ?", tenantID, productID)
	return page[models.Plan](q, "plans", p)
}

// GetPlan returns one plan of a tenant.
// ProductPlanIDs lists the ids of a product's plans, oldest first, and its default plan (nil
// when none is marked).
func (s *Store) ProductPlanIDs(ctx context.Context, productID uuid.UUID) (ids []uuid.UUID, defaultPlan *uuid.UUID, err error) {
	var rows []struct {
		ID        uuid.UUID
		IsDefault bool
	}
	if err := s.db(ctx).Raw(`SELECT id, is_default FROM plans WHERE product_id = ? ORDER BY created_at, id`, productID).Scan(&rows).Error; err != nil {
		return nil, nil, err
	}
	for _, r := range rows {
		ids = append(ids, r.ID)
		if r.IsDefault {
			id := r.ID
			defaultPlan = &id
		}
	}
	return ids, defaultPlan, nil
}

func (s *Store) GetPlan(ctx context.Context, tenantID, id uuid.UUID) (models.Plan, error) {
	return getRow[models.Plan](s.db(ctx), tenantID, id)
}

// planProduct finds the product of a plan, so the product can be locked before the plan.
func planProduct(tx *gorm.DB, tenantID, id uuid.UUID) (uuid.UUID, error) {
	pl, err := getRow[models.Plan](tx, tenantID, id)
	return pl.ProductID, err
}

// UpdatePlan changes a plan of a product that is not archived.
func (s *Store) UpdatePlan(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.Plan) error) (before, after models.Plan, err error) {
	err = s.db(ctx).Transaction(func(tx *gorm.DB) error {
		productID, err := planProduct(tx, tenantID, id)
		if err != nil {
			return err
		}
		if err := lockProductForPlans(tx, tenantID, productID); err != nil {
			return err
		}
		cur, err := lockRow[models.Plan](tx, tenantID, id)
		if err != nil {
			return err
		}
		before = cur
		if err := apply(&cur); err != nil {
			return err
		}
		if cur.IsDefault && !before.IsDefault {
			if err := tx.Exec(`UPDATE plans SET is_default = false WHERE product_id = ? AND is_default AND id <> ?`, productID, cur.ID).Error; err != nil {
				return err
			}
		}
		if err := tx.Save(&cur).Error; err != nil {
			return uniqueConflict(err)
		}
		after = cur
		return nil
	})
	return before, after, err
}

// DeletePlan deletes a plan of a product that is not archived.
func (s *Store) DeletePlan(ctx context.Context, tenantID, id uuid.UUID, guard func(models.Plan) error) (models.Plan, error) {
	var row models.Plan
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		productID, err := planProduct(tx, tenantID, id)
		if err != nil {
			return err
		}
		if err := lockProductForPlans(tx, tenantID, productID); err != nil {
			return err
		}
		row, err = lockRow[models.Plan](tx, tenantID, id)
		if err != nil {
			return err
		}
		if guard != nil {
			if err := guard(row); err != nil {
				return err
			}
		}
		return tx.Where("tenant_id = ? AND id = ?", tenantID, id).Delete(&models.Plan{}).Error
	})
	return row, err
}
