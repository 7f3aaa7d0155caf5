package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// Store is the data layer over one database. Its GORM handle stays inside the package: the
// store is the only code that speaks SQL, and a use case that needs several changes to commit
// together runs them in InTx.
type Store struct {
	pool *gorm.DB
	// observeDirect are called with every statement sent past GORM (readRows, execDirect),
	// which GORM's callbacks do not see; set before the store is used.
	observeDirect []func(query string)
	// slugs are the tenants' slugs by id, read once: a slug never changes (TenantSlug).
	slugs sync.Map
}

// New returns a Store on db.
func New(db *gorm.DB) *Store { return &Store{pool: db} }

// txKey carries the transaction InTx opened in a context.
type txKey struct{}

// InTx runs fn in one transaction: every Store method called with the context fn receives takes
// part in it, so a use case can make several changes and its audit row commit together or not
// at all. An InTx inside another joins the outer transaction. fn's error (or a panic) rolls back.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txKey{}).(*gorm.DB); ok {
		return fn(ctx)
	}
	return s.pool.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return fn(context.WithValue(ctx, txKey{}, tx))
	})
}

// InTransaction reports whether ctx carries a transaction of InTx: a statement that fails in
// it aborts it, so its error can't be ignored.
func (s *Store) InTransaction(ctx context.Context) bool {
	_, ok := ctx.Value(txKey{}).(*gorm.DB)
	return ok
}

// db is the handle every query starts from: the transaction of InTx when ctx carries one, else
// the pool.
func (s *Store) db(ctx context.Context) *gorm.DB {
	if tx, ok := ctx.Value(txKey{}).(*gorm.DB); ok {
		return tx.WithContext(ctx)
	}
	return s.pool.WithContext(ctx)
}

func notFound(err error) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	return err
}

// UserFromLogin returns the user of an OIDC subject, creating it on the first request. A user
// added earlier by e-mail (as a tenant owner or member) is bound to the subject on first login.
func (s *Store) UserFromLogin(ctx context.Context, issuer, subject, email, name string) (models.User, error) {
	var u models.User
	err := s.db(ctx).Where("issuer = ? AND subject = ?", issuer, subject).Take(&u).Error
	if err == nil {
		if (email != "" && !strings.EqualFold(u.Email, email)) || (name != "" && u.DisplayName != name) {
			// Keep the copy of the identity provider's profile current, best effort: a clash
			// with another user's e-mail must not lock this user out.
			if uerr := s.db(ctx).Model(&u).Updates(map[string]any{"email": email, "display_name": name}).Error; uerr == nil {
				u.Email, u.DisplayName = email, name
			}
		}
		return u, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return u, err
	}
	err = s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var pre models.User
		perr := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("lower(email) = lower(?) AND subject IS NULL", email).Take(&pre).Error
		now := time.Now().UTC()
		if perr == nil {
			u = pre
			return tx.Model(&u).Updates(map[string]any{"issuer": issuer, "subject": subject, "display_name": name, "last_login_at": now}).Error
		}
		if !errors.Is(perr, gorm.ErrRecordNotFound) {
			return perr
		}
		u = models.User{Issuer: issuer, Subject: subject, Email: email, DisplayName: name, LastLoginAt: &now}
		return tx.Create(&u).Error
	})
	if err != nil && IsUniqueViolation(err, "") {
		// A concurrent first request created it: read it back.
		err = s.db(ctx).Where("issuer = ? AND subject = ?", issuer, subject).Take(&u).Error
	}
	return u, err
}

// TenantMembership is a tenant with the user's role in it.
type TenantMembership struct {
	models.Tenant
	Role string `json:"role"`
}

// MembershipsOf lists the tenants a user belongs to, with roles.
func (s *Store) MembershipsOf(ctx context.Context, userID uuid.UUID) ([]TenantMembership, error) {
	var out []TenantMembership
	err := s.db(ctx).Table("memberships m").
		Select("t.*, m.role").
		Joins("JOIN tenants t ON t.id = m.tenant_id").
		Where("m.user_id = ? AND t.status <> 'deleted'", userID).
		Order("t.slug").Scan(&out).Error
	return out, err
}

// CreateTenant inserts a tenant; a taken slug is ErrConflict.
func (s *Store) CreateTenant(ctx context.Context, t *models.Tenant) error {
	err := s.db(ctx).Create(t).Error
	if IsUniqueViolation(err, "") {
		return fmt.Errorf("tenant slug %q: %w", t.Slug, ErrConflict)
	}
	return err
}

// TenantFilter filters tenant lists.
type TenantFilter struct {
	Type, Status string
}

// ListTenants lists tenants newest first.
func (s *Store) ListTenants(ctx context.Context, f TenantFilter, p Page) ([]models.Tenant, string, error) {
	q := s.db(ctx).Table("tenants")
	q = whereSet(q, "type", f.Type)
	q = whereSet(q, "status", f.Status)
	return page[models.Tenant](q, "tenants", p)
}

// GetTenant returns one tenant.
func (s *Store) GetTenant(ctx context.Context, id uuid.UUID) (models.Tenant, error) {
	var t models.Tenant
	return t, notFound(s.db(ctx).Take(&t, "id = ?", id).Error)
}

// SetTenantStatus changes a tenant's status.
func (s *Store) SetTenantStatus(ctx context.Context, id uuid.UUID, status string) (models.Tenant, error) {
	var t models.Tenant
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&t, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		if err := tx.Model(&t).Updates(map[string]any{"status": status, "updated_at": time.Now().UTC()}).Error; err != nil {
			return err
		}
		return notifyIdentityChanged(tx)
	})
	return t, err
}

// IdentityChannel is the NOTIFY channel on which every change of a membership or of a
// tenant's status is announced (in the changing transaction, so on commit): every api replica
// drops the principals it caches when it hears one.
const IdentityChannel = "imprun_identity_changes"

func notifyIdentityChanged(tx *gorm.DB) error {
	return tx.Exec(`SELECT pg_notify(?, '')`, IdentityChannel).Error
}

// Member is a membership with its user.
type Member struct {
	ID        uuid.UUID `json:"id"`
	UserID    uuid.UUID `json:"user_id"`
	Email     string    `json:"email"`
	Name      string    `json:"display_name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PageKey orders members in lists.
func (m Member) PageKey() (time.Time, uuid.UUID) { return m.CreatedAt, m.ID }

func memberQuery(tx *gorm.DB) *gorm.DB {
	return tx.Table("memberships").
		Select("memberships.id, memberships.user_id, users.email, users.display_name AS name, memberships.role, memberships.created_at, memberships.updated_at").
		Joins("JOIN users ON users.id = memberships.user_id")
}

// ListMembers lists the members of a tenant.
func (s *Store) ListMembers(ctx context.Context, tenantID uuid.UUID, p Page) ([]Member, string, error) {
	var rows []Member
	if err := Paginate(memberQuery(s.db(ctx)).Where("memberships.tenant_id = ?", tenantID), "memberships", p).Scan(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// ErrLastOwner refuses to leave a tenant without an owner.
var ErrLastOwner = errors.New("a tenant keeps at least one owner")

// AddMember adds the user with email (created now if it never logged in) with role. A user
// who is already a member is ErrConflict.
func (s *Store) AddMember(ctx context.Context, tenantID uuid.UUID, email, role string) (Member, error) {
	var m Member
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var u models.User
		err := tx.Where("lower(email) = lower(?)", email).Take(&u).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			u = models.User{Email: email}
			err = tx.Omit("issuer", "subject").Create(&u).Error
		}
		if err != nil {
			return err
		}
		ms := models.Membership{TenantID: tenantID, UserID: u.ID, Role: role}
		if err := tx.Create(&ms).Error; err != nil {
			if IsUniqueViolation(err, "") {
				return fmt.Errorf("%s is already a member: %w", email, ErrConflict)
			}
			return err
		}
		if err := notifyIdentityChanged(tx); err != nil {
			return err
		}
		return memberQuery(tx).Where("memberships.id = ?", ms.ID).Scan(&m).Error
	})
	return m, err
}

// GetMember returns one member of a tenant.
func (s *Store) GetMember(ctx context.Context, tenantID, id uuid.UUID) (Member, error) {
	var m Member
	err := memberQuery(s.db(ctx)).Where("memberships.tenant_id = ? AND memberships.id = ?", tenantID, id).Scan(&m).Error
	if err == nil && m.ID == uuid.Nil {
		return m, ErrNotFound
	}
	return m, err
}

// UpdateMemberRole changes a member's role; demoting the last owner is ErrLastOwner.
func (s *Store) UpdateMemberRole(ctx context.Context, tenantID, id uuid.UUID, role string) (Member, error) {
	var m Member
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		cur, err := lockMembership(tx, tenantID, id)
		if err != nil {
			return err
		}
		if cur.Role == models.RoleOwner && role != models.RoleOwner {
			if err := ensureAnotherOwner(tx, tenantID, id); err != nil {
				return err
			}
		}
		if err := tx.Model(&cur).Updates(map[string]any{"role": role, "updated_at": time.Now().UTC()}).Error; err != nil {
			return err
		}
		if err := notifyIdentityChanged(tx); err != nil {
			return err
		}
		return memberQuery(tx).Where("memberships.id = ?", id).Scan(&m).Error
	})
	return m, err
}

// RemoveMember deletes a membership; removing the last owner is ErrLastOwner.
func (s *Store) RemoveMember(ctx context.Context, tenantID, id uuid.UUID) (Member, error) {
	var m Member
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		cur, err := lockMembership(tx, tenantID, id)
		if err != nil {
			return err
		}
		if err := memberQuery(tx).Where("memberships.id = ?", id).Scan(&m).Error; err != nil {
			return err
		}
		if cur.Role == models.RoleOwner {
			if err := ensureAnotherOwner(tx, tenantID, id); err != nil {
				return err
			}
		}
		if err := tx.Delete(&cur).Error; err != nil {
			return err
		}
		return notifyIdentityChanged(tx)
	})
	return m, err
}

func lockMembership(tx *gorm.DB, tenantID, id uuid.UUID) (models.Membership, error) {
	var cur models.Membership
	// Lock every owner row of the tenant too, so two concurrent demotions can't both pass.
	if err := tx.Exec(`SELECT 1 FROM memberships WHERE tenant_id = ? AND role = 'owner' FOR UPDATE`, tenantID).Error; err != nil {
		return cur, err
	}
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&cur, "tenant_id = ? AND id = ?", tenantID, id).Error
	return cur, notFound(err)
}

func ensureAnotherOwner(tx *gorm.DB, tenantID, except uuid.UUID) error {
	var n int64
	if err := tx.Table("memberships").Where("tenant_id = ? AND role = 'owner' AND id <> ?", tenantID, except).Count(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		return ErrLastOwner
	}
	return nil
}

// AuditFilter filters the audit log.
type AuditFilter struct {
	TenantID     *uuid.UUID
	ActorID      string
	Action       string
	ResourceType string
	ResourceID   string
	From, To     *time.Time
}

// InsertAudit appends one audit entry.
func (s *Store) InsertAudit(ctx context.Context, a *models.AuditLog) error {
	return s.db(ctx).Create(a).Error
}

// ListAudit lists audit entries newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter, p Page) ([]models.AuditLog, string, error) {
	q := s.db(ctx).Table("audit_logs")
	q = wherePtr(q, "tenant_id", f.TenantID)
	q = whereSet(q, "actor_id", f.ActorID)
	q = whereSet(q, "action", f.Action)
	q = whereSet(q, "resource_type", f.ResourceType)
	q = whereSet(q, "resource_id", f.ResourceID)
	if f.From != nil {
		q = q.Where("created_at >= ?", *f.From)
	}
	if f.To != nil {
		q = q.Where("created_at < ?", *f.To)
	}
	return page[models.AuditLog](q, "audit_logs", p)
}
