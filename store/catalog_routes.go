package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// StatusFilter filters lists of rows with a status.
type StatusFilter struct{ Status string }

// ---- routes ----

// checkBackendRefs proves that every backend a route sends traffic to is a backend of the
// route's own service, and locks those backends (FOR SHARE) so none is deleted before the
// route is saved; a backend delete locks the backend and then finds this route.
func checkBackendRefs(tx *gorm.DB, tenantID, serviceID uuid.UUID, refs []models.BackendRef) error {
	if len(refs) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(refs))
	for i, r := range refs {
		ids[i] = r.BackendID
	}
	var found []uuid.UUID
	err := tx.Model(&models.Backend{}).Clauses(clause.Locking{Strength: "SHARE"}).
		Where("tenant_id = ? AND api_service_id = ? AND id IN ?", tenantID, serviceID, ids).
		Pluck("id", &found).Error
	if err != nil {
		return err
	}
	have := make(map[uuid.UUID]bool, len(found))
	for _, id := range found {
		have[id] = true
	}
	var bad RefErrors
	for i, r := range refs {
		if !have[r.BackendID] {
			bad = append(bad, RefError{Field: fmt.Sprintf("backend_refs[%d].backend_id", i), Message: "not a backend of this API service"})
		}
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// CreateRoute inserts a route of a service (ErrNotFound when the tenant has no such service);
// backend references outside the service are RefErrors, a taken name ErrConflict.
func (s *Store) CreateRoute(ctx context.Context, r *models.Route) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := requireService(tx, r.TenantID, r.APIServiceID); err != nil {
			return err
		}
		if err := checkBackendRefs(tx, r.TenantID, r.APIServiceID, r.BackendRefs.V); err != nil {
			return err
		}
		return uniqueConflict(tx.Create(r).Error)
	})
}

// ListRoutes lists the routes of a service, newest first.
func (s *Store) ListRoutes(ctx context.Context, tenantID, serviceID uuid.UUID, f StatusFilter, p Page) ([]models.Route, string, error) {
	if err := s.ServiceExists(ctx, tenantID, serviceID); err != nil {
		return nil, "", err
	}
	q := s.db(ctx).Model(&models.Route{}).Where("tenant_id = ? AND api_service_id = ?", tenantID, serviceID)
	q = whereSet(q, "status", f.Status)
	return page[models.Route](q, "routes", p)
}

// GetRoute returns one route of a tenant.
func (s *Store) GetRoute(ctx context.Context, tenantID, id uuid.UUID) (models.Route, error) {
	return getRow[models.Route](s.db(ctx), tenantID, id)
}

// UpdateRoute changes a route under a row lock; its backend references are checked again.
func (s *Store) UpdateRoute(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.Route) error) (before, after models.Route, err error) {
	return updateRow(s, ctx, tenantID, id, apply, func(tx *gorm.DB, cur *models.Route) error {
		return checkBackendRefs(tx, tenantID, cur.APIServiceID, cur.BackendRefs.V)
	})
}

// DeleteRoute deletes a route with its route policies.
func (s *Store) DeleteRoute(ctx context.Context, tenantID, id uuid.UUID, guard func(models.Route) error) (models.Route, error) {
	return deleteRow(s, ctx, tenantID, id, guard, nil)
}

// ---- backends ----

// CreateBackend inserts a backend of a service (ErrNotFound when the tenant has no such
// service); a taken name is ErrConflict.
func (s *Store) CreateBackend(ctx context.Context, b *models.Backend) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := requireService(tx, b.TenantID, b.APIServiceID); err != nil {
			return err
		}
		return uniqueConflict(tx.Create(b).Error)
	})
}

// ListBackends lists the backends of a service, newest first.
func (s *Store) ListBackends(ctx context.Context, tenantID, serviceID uuid.UUID, f StatusFilter, p Page) ([]models.Backend, string, error) {
	if err := s.ServiceExists(ctx, tenantID, serviceID); err != nil {
		return nil, "", err
	}
	q := s.db(ctx).Model(&models.Backend{}).Where("tenant_id = ? AND api_service_id = ?", tenantID, serviceID)
	q = whereSet(q, "status", f.Status)
	return page[models.Backend](q, "backends", p)
}

// GetBackend returns one backend of a tenant.
func (s *Store) GetBackend(ctx context.Context, tenantID, id uuid.UUID) (models.Backend, error) {
	return getRow[models.Backend](s.db(ctx), tenantID, id)
}

// UpdateBackend changes a backend under a row lock.
func (s *Store) UpdateBackend(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.Backend) error) (before, after models.Backend, err error) {
	return updateRow(s, ctx, tenantID, id, apply, nil)
}

// DeleteBackend deletes a backend no route sends traffic to; otherwise ReferencedError.
func (s *Store) DeleteBackend(ctx context.Context, tenantID, id uuid.UUID, guard func(models.Backend) error) (models.Backend, error) {
	return deleteRow(s, ctx, tenantID, id, guard, func(tx *gorm.DB, cur models.Backend) error {
		probe, _ := json.Marshal([]map[string]string{{"backend_id": id.String()}})
		var names []string
		err := tx.Model(&models.Route{}).
			Where("tenant_id = ? AND api_service_id = ? AND backend_refs @> ?::jsonb", tenantID, cur.APIServiceID, string(probe)).
			Order("name").Limit(20).Pluck("name", &names).Error
		if err != nil {
			return err
		}
		if len(names) > 0 {
			return &ReferencedError{By: KindRoute, Names: names}
		}
		return nil
	})
}

// ---- policies ----

// PolicyFilter filters policy lists.
type PolicyFilter struct {
	Scope   string // service lists only: service or route
	RouteID *uuid.UUID
	Type    string
	Enabled *bool
}

func (f PolicyFilter) apply(q *gorm.DB) *gorm.DB {
	q = whereSet(q, "scope", f.Scope)
	q = wherePtr(q, "route_id", f.RouteID)
	q = whereSet(q, "type", f.Type)
	q = wherePtr(q, "enabled", f.Enabled)
	return q
}

// CreatePolicy inserts a policy. A service or route policy needs the tenant's service
// (ErrNotFound); a route policy's route must be a route of that service (RefErrors on route_id).
func (s *Store) CreatePolicy(ctx context.Context, p *models.Policy) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if p.APIServiceID != nil {
			if err := requireService(tx, p.TenantID, *p.APIServiceID); err != nil {
				return err
			}
		}
		if p.RouteID != nil {
			var n int64
			err := tx.Raw(`SELECT count(*) FROM (SELECT 1 FROM routes WHERE tenant_id = ? AND api_service_id = ? AND id = ? FOR SHARE) r`,
				p.TenantID, *p.APIServiceID, *p.RouteID).Scan(&n).Error
			if err != nil {
				return err
			}
			if n == 0 {
				return RefErrors{{Field: "route_id", Message: "not a route of this API service"}}
			}
		}
		return tx.Create(p).Error
	})
}

// ListGlobalPolicies lists the tenant's global policies, newest first.
func (s *Store) ListGlobalPolicies(ctx context.Context, tenantID uuid.UUID, f PolicyFilter, p Page) ([]models.Policy, string, error) {
	q := f.apply(s.db(ctx).Model(&models.Policy{}).Where("tenant_id = ? AND scope = ?", tenantID, models.ScopeGlobal))
	return page[models.Policy](q, "policies", p)
}

// ListServicePolicies lists the service and route policies of a service, newest first.
func (s *Store) ListServicePolicies(ctx context.Context, tenantID, serviceID uuid.UUID, f PolicyFilter, p Page) ([]models.Policy, string, error) {
	if err := s.ServiceExists(ctx, tenantID, serviceID); err != nil {
		return nil, "", err
	}
	q := f.apply(s.db(ctx).Model(&models.Policy{}).Where("tenant_id = ? AND api_service_id = ?", tenantID, serviceID))
	return page[models.Policy](q, "policies", p)
}

// GetPolicy returns one policy of a tenant.
func (s *Store) GetPolicy(ctx context.Context, tenantID, id uuid.UUID) (models.Policy, error) {
	return getRow[models.Policy](s.db(ctx), tenantID, id)
}

// UpdatePolicy changes a policy under a row lock.
func (s *Store) UpdatePolicy(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.Policy) error) (before, after models.Policy, err error) {
	return updateRow(s, ctx, tenantID, id, apply, nil)
}

// DeletePolicy deletes a policy.
func (s *Store) DeletePolicy(ctx context.Context, tenantID, id uuid.UUID, guard func(models.Policy) error) (models.Policy, error) {
	return deleteRow(s, ctx, tenantID, id, guard, nil)
}

// ---- what a route needs ----

// RouteConfig is everything one route needs to be served: the route, its service, the
// backends it sends traffic to and the policies of its three scopes. EffectivePolicies
// resolves the policies that apply.
type RouteConfig struct {
	Route           models.Route
	Service         models.APIService
	Backends        []models.Backend // in the order of the route's backend_refs
	GlobalPolicies  []models.Policy
	ServicePolicies []models.Policy
	RoutePolicies   []models.Policy
}

// EffectivePolicies resolves the policies that apply to the route (route > service > global).
func (rc RouteConfig) EffectivePolicies() []models.Policy {
	return models.EffectivePolicies(rc.GlobalPolicies, rc.ServicePolicies, rc.RoutePolicies)
}

// policyOrder keeps loaded policy lists stable, so what is built from them is too.
const policyOrder = "priority DESC, created_at, id"

// LoadRouteConfig loads what a route needs in four queries, whatever the size of the tenant.
func (s *Store) LoadRouteConfig(ctx context.Context, tenantID, routeID uuid.UUID) (RouteConfig, error) {
	var rc RouteConfig
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if rc.Route, err = getRow[models.Route](tx, tenantID, routeID); err != nil {
			return err
		}
		if rc.Service, err = getRow[models.APIService](tx, tenantID, rc.Route.APIServiceID); err != nil {
			return err
		}
		ids := make([]uuid.UUID, 0, len(rc.Route.BackendRefs.V))
		for _, r := range rc.Route.BackendRefs.V {
			ids = append(ids, r.BackendID)
		}
		var backends []models.Backend
		if len(ids) > 0 {
			if err := tx.Where("tenant_id = ? AND api_service_id = ? AND id IN ?", tenantID, rc.Service.ID, ids).Find(&backends).Error; err != nil {
				return err
			}
		}
		byID := map[uuid.UUID]models.Backend{}
		for _, b := range backends {
			byID[b.ID] = b
		}
		rc.Backends = []models.Backend{}
		for _, id := range ids {
			if b, ok := byID[id]; ok {
				rc.Backends = append(rc.Backends, b)
			}
		}
		var ps []models.Policy
		err = tx.Where(`tenant_id = ? AND (scope = 'global' OR (scope = 'service' AND api_service_id = ?) OR (scope = 'route' AND route_id = ?))`,
			tenantID, rc.Service.ID, routeID).Order(policyOrder).Find(&ps).Error
		if err != nil {
			return err
		}
		rc.GlobalPolicies, rc.ServicePolicies, rc.RoutePolicies = []models.Policy{}, []models.Policy{}, []models.Policy{}
		for _, p := range ps {
			switch p.Scope {
			case models.ScopeGlobal:
				rc.GlobalPolicies = append(rc.GlobalPolicies, p)
			case models.ScopeService:
				rc.ServicePolicies = append(rc.ServicePolicies, p)
			case models.ScopeRoute:
				rc.RoutePolicies = append(rc.RoutePolicies, p)
			}
		}
		return nil
	}, readOnly)
	return rc, err
}

// ServiceConfig is a whole service as a publish snapshot takes it: the service, all its routes
// and backends, and every policy that can apply to them.
type ServiceConfig struct {
	Service         models.APIService
	Routes          []models.Route   // oldest first
	Backends        []models.Backend // oldest first
	GlobalPolicies  []models.Policy
	ServicePolicies []models.Policy
	RoutePolicies   map[uuid.UUID][]models.Policy // by route id
}

// EffectivePolicies resolves the policies that apply to one route of the service.
func (sc ServiceConfig) EffectivePolicies(routeID uuid.UUID) []models.Policy {
	return models.EffectivePolicies(sc.GlobalPolicies, sc.ServicePolicies, sc.RoutePolicies[routeID])
}

// LoadServiceConfig loads a whole service in four queries, read in one snapshot so the parts
// agree with each other.
func (s *Store) LoadServiceConfig(ctx context.Context, tenantID, serviceID uuid.UUID) (ServiceConfig, error) {
	var sc ServiceConfig
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if sc.Service, err = getRow[models.APIService](tx, tenantID, serviceID); err != nil {
			return err
		}
		sc.Routes, sc.Backends = []models.Route{}, []models.Backend{}
		if err := tx.Where("tenant_id = ? AND api_service_id = ?", tenantID, serviceID).Order("created_at, id").Find(&sc.Routes).Error; err != nil {
			return err
		}
		if err := tx.Where("tenant_id = ? AND api_service_id = ?", tenantID, serviceID).Order("created_at, id").Find(&sc.Backends).Error; err != nil {
			return err
		}
		var ps []models.Policy
		err = tx.Where(`tenant_id = ? AND (scope = 'global' OR api_service_id = ?)`, tenantID, serviceID).Order(policyOrder).Find(&ps).Error
		if err != nil {
			return err
		}
		sc.GlobalPolicies, sc.ServicePolicies, sc.RoutePolicies = []models.Policy{}, []models.Policy{}, map[uuid.UUID][]models.Policy{}
		for _, p := range ps {
			switch p.Scope {
			case models.ScopeGlobal:
				sc.GlobalPolicies = append(sc.GlobalPolicies, p)
			case models.ScopeService:
				sc.ServicePolicies = append(sc.ServicePolicies, p)
			case models.ScopeRoute:
				sc.RoutePolicies[*p.RouteID] = append(sc.RoutePolicies[*p.RouteID], p)
			}
		}
		return nil
	}, readOnly)
	return sc, err
}
