package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// Kinds of catalog rows, as CatalogUsage and the audit log name them.
const (
	KindAPIService = "api_service"
	KindRoute      = "route"
	KindBackend    = "backend"
	KindPolicy     = "policy"
	KindGateway    = "gateway"
	KindProduct    = "product"
	KindPlan       = "plan"
)

// CatalogUsage says whether a published revision uses a catalog row, so the API can refuse to
// delete or change it (409 in_use). The publish module provides the real implementation; until
// publishes exist nothing is in use.
//
// kind is one of the Kind constants. The API asks while its transaction holds the row FOR
// UPDATE, so a publish that reads the row FOR SHARE to snapshot it either waits for the change
// or makes it refused. An implementation reads on its own connection and must not lock the row.
type CatalogUsage interface {
	InUse(ctx context.Context, tenantID uuid.UUID, kind string, id uuid.UUID) (bool, error)
}

// NoCatalogUsage is the CatalogUsage of a control plane without publishes: nothing is in use.
type NoCatalogUsage struct{}

// InUse always reports false.
func (NoCatalogUsage) InUse(context.Context, uuid.UUID, string, uuid.UUID) (bool, error) {
	return false, nil
}

// ErrInUse refuses to delete a row that something outside the catalog (a publish) references.
var ErrInUse = errors.New("in use by a publish")

// ErrArchived refuses any write to an archived product or its plans.
var ErrArchived = errors.New("the product is archived")

// ErrNoActiveService refuses to activate (or keep active) a product without an active service.
var ErrNoActiveService = errors.New("an active product needs at least one linked active API service")

// RefError names a field of a request that points at a row the tenant (or the owning service)
// does not have. The HTTP layer turns it into a 422 for that field; the row of another tenant
// and a row that does not exist get the same answer.
type RefError struct {
	Field   string
	Message string
}

// RefErrors are the failing references of one request.
type RefErrors []RefError

func (e RefErrors) Error() string {
	parts := make([]string, len(e))
	for i, r := range e {
		parts[i] = r.Field + ": " + r.Message
	}
	return "invalid references: " + strings.Join(parts, "; ")
}

// ReferencedError refuses to delete a row that other catalog rows still point to.
type ReferencedError struct {
	By    string   // kind of the referencing rows: route, product
	Names []string // their names
}

func (e *ReferencedError) Error() string {
	return fmt.Sprintf("still referenced by %s %s", e.By, strings.Join(e.Names, ", "))
}

// TransitionError refuses a status change the state machine does not allow.
type TransitionError struct {
	From, To string
}

func (e *TransitionError) Error() string { return fmt.Sprintf("cannot go from %s to %s", e.From, e.To) }

// Reads that must see one consistent snapshot across several queries.
var readOnly = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}

// lockRow reads one row of a tenant FOR UPDATE; another tenant's row is ErrNotFound.
func lockRow[T any](tx *gorm.DB, tenantID, id uuid.UUID) (T, error) {
	var row T
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("tenant_id = ? AND id = ?", tenantID, id).Take(&row).Error
	return row, notFound(err)
}

// getRow reads one row of a tenant.
func getRow[T any](db *gorm.DB, tenantID, id uuid.UUID) (T, error) {
	var row T
	err := db.Where("tenant_id = ? AND id = ?", tenantID, id).Take(&row).Error
	return row, notFound(err)
}

// updateRow locks a tenant's row, lets apply change it (apply may refuse with any error, which
// rolls back), runs check inside the same transaction and saves every column. before is the row
// as it was.
func updateRow[T any](s *Store, ctx context.Context, tenantID, id uuid.UUID, apply func(cur *T) error,
	check func(tx *gorm.DB, cur *T) error) (before, after T, err error) {
	err = s.db(ctx).Transaction(func(tx *gorm.DB) error {
		cur, err := lockRow[T](tx, tenantID, id)
		if err != nil {
			return err
		}
		before = cur
		if err := apply(&cur); err != nil {
			return err
		}
		if check != nil {
			if err := check(tx, &cur); err != nil {
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

// deleteRow locks a tenant's row, lets guard refuse, runs check and deletes it.
func deleteRow[T any](s *Store, ctx context.Context, tenantID, id uuid.UUID, guard func(cur T) error,
	check func(tx *gorm.DB, cur T) error) (T, error) {
	var row T
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		cur, err := lockRow[T](tx, tenantID, id)
		if err != nil {
			return err
		}
		row = cur
		if guard != nil {
			if err := guard(cur); err != nil {
				return err
			}
		}
		if check != nil {
			if err := check(tx, cur); err != nil {
				return err
			}
		}
		err = tx.Where("tenant_id = ? AND id = ?", tenantID, id).Delete(&cur).Error
		if IsForeignKeyViolation(err) {
			// Only rows outside the catalog (v1 publishes) reference catalog rows without a
			// cascade or a check above.
			return ErrInUse
		}
		return err
	})
	return row, err
}

// uniqueConflict turns a unique violation (a taken name) into ErrConflict.
func uniqueConflict(err error) error {
	if IsUniqueViolation(err, "") {
		return fmt.Errorf("%w: %s", ErrConflict, err.Error())
	}
	return err
}

// ---- API services ----

// APIServiceFilter filters service lists.
type APIServiceFilter struct{ Status string }

// CreateAPIService inserts a service; a taken name is ErrConflict.
func (s *Store) CreateAPIService(ctx context.Context, svc *models.APIService) error {
	return uniqueConflict(s.db(ctx).Create(svc).Error)
}

// ListAPIServices lists a tenant's services, newest first: one query per page whatever the
// number of services, on the (tenant_id, created_at, id) index.
//
// It is the hottest list of the API, so it is one statement read through pgx (readRows), with
// the rows scanned column by column: GORM's reflection, statement building and database/sql's
// conversions were two thirds of the handler's CPU under load (BenchmarkRESTList's profile).
func (s *Store) ListAPIServices(ctx context.Context, tenantID uuid.UUID, f APIServiceFilter, p Page) ([]models.APIService, string, error) {
	query := `SELECT id, tenant_id, name, version, description, labels, status, created_at, updated_at
		FROM api_services WHERE tenant_id = $1`
	args := []any{tenantID}
	if f.Status != "" {
		args = append(args, f.Status)
		query += fmt.Sprintf(" AND status = $%d", len(args))
	}
	if p.After != nil {
		args = append(args, p.After.CreatedAt, p.After.ID)
		query += fmt.Sprintf(" AND (created_at, id) < ($%d, $%d)", len(args)-1, len(args))
	}
	args = append(args, p.Limit+1)
	query += fmt.Sprintf(" ORDER BY created_at DESC, id DESC LIMIT $%d", len(args))
	rows := make([]models.APIService, 0, p.Limit+1)
	err := s.readRows(ctx, query, args, func(rs rowScanner) error {
		var r models.APIService
		if err := rs.Scan(&r.ID, &r.TenantID, &r.Name, &r.Version, &r.Description, &r.Labels, &r.Status, &r.CreatedAt, &r.UpdatedAt); err != nil {
			return err
		}
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// GetAPIService returns one service of a tenant.
func (s *Store) GetAPIService(ctx context.Context, tenantID, id uuid.UUID) (models.APIService, error) {
	return getRow[models.APIService](s.db(ctx), tenantID, id)
}

// UpdateAPIService changes a service under a row lock; apply changes the row or refuses.
func (s *Store) UpdateAPIService(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.APIService) error) (before, after models.APIService, err error) {
	return updateRow(s, ctx, tenantID, id, apply, nil)
}

// DeleteAPIService deletes a service with its routes, backends and policies. A service that a
// product links is refused (ReferencedError): unlinking it is the product's decision.
func (s *Store) DeleteAPIService(ctx context.Context, tenantID, id uuid.UUID, guard func(models.APIService) error) (models.APIService, error) {
	return deleteRow(s, ctx, tenantID, id, guard, func(tx *gorm.DB, cur models.APIService) error {
		var names []string
		err := tx.Table("product_api_services l").Joins("JOIN products p ON p.id = l.product_id").
			Where("l.tenant_id = ? AND l.api_service_id = ?", tenantID, id).
			Order("p.name").Limit(20).Pluck("p.name", &names).Error
		if err != nil {
			return err
		}
		if len(names) > 0 {
			return &ReferencedError{By: KindProduct, Names: names}
		}
		return nil
	})
}

// requireService checks that a service of the tenant exists, locking it against deletion until
// the transaction ends.
func requireService(tx *gorm.DB, tenantID, serviceID uuid.UUID) error {
	var n int64
	err := tx.Raw(`SELECT count(*) FROM (SELECT 1 FROM api_services WHERE tenant_id = ? AND id = ? FOR SHARE) s`, tenantID, serviceID).Scan(&n).Error
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ServiceExists reports ErrNotFound unless the tenant has the service; lists of a service's
// routes, backends and policies ask it first so a foreign service id is a 404, not an empty page.
func (s *Store) ServiceExists(ctx context.Context, tenantID, serviceID uuid.UUID) error {
	var ok bool
	err := s.db(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM api_services WHERE tenant_id = ? AND id = ?)`, tenantID, serviceID).Scan(&ok).Error
	if err == nil && !ok {
		return ErrNotFound
	}
	return err
}
