package http

import (
	"context"
	nethttp "net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/catalog"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// The catalog's kinds as the REST API serves them: what each one's audit entries name and
// summarise, and the query filters of its lists. The handlers are the generic ones of catalog.go.

// ---- API services ----

func apiServiceKind(c *catalog.Catalog) catalogKind[models.APIService, catalog.APIServiceInput] {
	return catalogKind[models.APIService, catalog.APIServiceInput]{
		rows: c.APIServices,
		id:   func(s models.APIService) uuid.UUID { return s.ID },
		name: func(s models.APIService) string { return s.Name },
		created: func(s models.APIService, _ catalog.APIServiceInput) map[string]any {
			return map[string]any{"version": s.Version, "status": s.Status}
		},
		deleted: func(s models.APIService) map[string]any {
			return map[string]any{"version": s.Version, "cascade": "routes, backends and policies of the service"}
		},
	}
}

func apiServiceFilter(c echo.Context) (f store.APIServiceFilter, err error) {
	f.Status, err = queryEnum(c, "status", models.ServiceActive, models.ServiceInactive)
	return f, err
}

// ---- routes ----

func routeKind(c *catalog.Catalog) catalogKind[models.Route, catalog.RouteInput] {
	return catalogKind[models.Route, catalog.RouteInput]{
		rows: c.Routes,
		id:   func(r models.Route) uuid.UUID { return r.ID },
		name: func(r models.Route) string { return r.Name },
		created: func(r models.Route, _ catalog.RouteInput) map[string]any {
			return map[string]any{"api_service_id": r.APIServiceID.String(), "status": r.Status, "paths": len(r.Paths.V), "backends": len(r.BackendRefs.V)}
		},
		deleted: func(r models.Route) map[string]any {
			return map[string]any{"api_service_id": r.APIServiceID.String()}
		},
	}
}

func routeFilter(c echo.Context) (f store.StatusFilter, err error) {
	f.Status, err = queryEnum(c, "status", models.RouteActive, models.RouteInactive, models.RouteDraft)
	return f, err
}

// effectivePoliciesResponse is the resolved policy list of one route.
type effectivePoliciesResponse struct {
	RouteID      uuid.UUID       `json:"route_id"`
	APIServiceID uuid.UUID       `json:"api_service_id"`
	Items        []models.Policy `json:"items"`
}

func (a *API) effectivePolicies(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	rc, err := a.catalog.RouteConfig(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, effectivePoliciesResponse{RouteID: rc.Route.ID, APIServiceID: rc.Service.ID, Items: rc.EffectivePolicies()})
}

// ---- backends ----

func backendKind(c *catalog.Catalog) catalogKind[models.Backend, catalog.BackendInput] {
	return catalogKind[models.Backend, catalog.BackendInput]{
		rows: c.Backends,
		id:   func(b models.Backend) uuid.UUID { return b.ID },
		name: func(b models.Backend) string { return b.Name },
		created: func(b models.Backend, _ catalog.BackendInput) map[string]any {
			return map[string]any{"api_service_id": b.APIServiceID.String(), "scheme": b.Scheme, "endpoints": len(b.Endpoints.V), "status": b.Status}
		},
		deleted: func(b models.Backend) map[string]any {
			return map[string]any{"api_service_id": b.APIServiceID.String()}
		},
	}
}

func backendFilter(c echo.Context) (f store.StatusFilter, err error) {
	f.Status, err = queryEnum(c, "status", models.BackendActive, models.BackendInactive)
	return f, err
}

// ---- policies ----

func policyKind(c *catalog.Catalog) catalogKind[models.Policy, catalog.PolicyInput] {
	return catalogKind[models.Policy, catalog.PolicyInput]{
		rows: c.Policies,
		id:   func(p models.Policy) uuid.UUID { return p.ID },
		name: func(p models.Policy) string { return p.Name },
		created: func(p models.Policy, _ catalog.PolicyInput) map[string]any {
			summary := map[string]any{"type": p.Type, "scope": p.Scope, "priority": p.Priority, "enabled": p.Enabled}
			if p.APIServiceID != nil {
				summary["api_service_id"] = p.APIServiceID.String()
			}
			if p.RouteID != nil {
				summary["route_id"] = p.RouteID.String()
			}
			return summary
		},
		deleted: func(p models.Policy) map[string]any {
			return map[string]any{"type": p.Type, "scope": p.Scope}
		},
	}
}

// policyFilter reads the filters common to policy lists.
func policyFilter(c echo.Context) (store.PolicyFilter, error) {
	var f store.PolicyFilter
	var err error
	if f.Type, err = queryEnum(c, "type", models.PolicyTypes()...); err != nil {
		return f, err
	}
	en, err := queryEnum(c, "enabled", "true", "false")
	if err != nil {
		return f, err
	}
	if en != "" {
		b := en == "true"
		f.Enabled = &b
	}
	return f, nil
}

// servicePolicyFilter is policyFilter with the scope and route of a service's policies.
func servicePolicyFilter(c echo.Context) (store.PolicyFilter, error) {
	f, err := policyFilter(c)
	if err != nil {
		return f, err
	}
	if f.Scope, err = queryEnum(c, "scope", models.ScopeService, models.ScopeRoute); err != nil {
		return f, err
	}
	f.RouteID, err = queryUUID(c, "route_id")
	return f, err
}

// ---- gateway templates ----

func gatewayKind(c *catalog.Catalog) catalogKind[models.Gateway, catalog.GatewayInput] {
	return catalogKind[models.Gateway, catalog.GatewayInput]{
		rows: c.Gateways,
		id:   func(g models.Gateway) uuid.UUID { return g.ID },
		name: func(g models.Gateway) string { return g.Name },
		created: func(g models.Gateway, _ catalog.GatewayInput) map[string]any {
			return map[string]any{"gateway_class": g.GatewayClass, "listeners": len(g.Listeners.V), "status": g.Status}
		},
		deleted: func(g models.Gateway) map[string]any {
			return map[string]any{"gateway_class": g.GatewayClass}
		},
	}
}

func gatewayFilter(c echo.Context) (f store.GatewayFilter, err error) {
	if f.Status, err = queryEnum(c, "status", models.GatewayActive, models.GatewayInactive); err != nil {
		return f, err
	}
	f.GatewayClass, err = queryEnum(c, "gateway_class", models.GatewayClassEnvoy, models.GatewayClassNginx)
	return f, err
}

// ---- products ----

func productKind(c *catalog.Catalog) catalogKind[models.Product, catalog.ProductInput] {
	return catalogKind[models.Product, catalog.ProductInput]{
		rows: c.Products,
		id:   func(p models.Product) uuid.UUID { return p.ID },
		name: func(p models.Product) string { return p.Name },
		created: func(p models.Product, in catalog.ProductInput) map[string]any {
			return map[string]any{"version": p.Version, "status": p.Status, "api_services": in.APIServices}
		},
		deleted: func(p models.Product) map[string]any {
			return map[string]any{"version": p.Version, "cascade": "plans of the product"}
		},
		// The linked services are listed before and after, not just marked changed.
		changed: func(before, after models.Product) map[string]any {
			b, a := catalog.ProductInputOf(before), catalog.ProductInputOf(after)
			summary := changeSummary(b, a)
			if _, ok := summary["api_services"]; ok {
				summary["api_services"] = map[string]any{"before": b.APIServices, "after": a.APIServices}
			}
			return summary
		},
	}
}

func productFilter(c echo.Context) (f store.ProductFilter, err error) {
	f.Status, err = queryEnum(c, "status", models.ProductDraft, models.ProductActive, models.ProductArchived)
	return f, err
}

// productStatus serves a product's status actions; change is the use case of the action.
func productStatus(change func(ctx context.Context, tenantID, id uuid.UUID) (before, after models.Product, err error), action string) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathUUID(c, "id")
		if err != nil {
			return err
		}
		before, after, err := change(c.Request().Context(), Tenant(c).ID, id)
		if err != nil {
			return err
		}
		Audit(c, AuditEntry{Action: action, ResourceType: store.KindProduct, ResourceID: id.String(), ResourceName: after.Name,
			Summary: map[string]any{"status": map[string]string{"before": before.Status, "after": after.Status}}})
		return c.JSON(nethttp.StatusOK, after)
	}
}

// ---- plans ----

func planKind(c *catalog.Catalog) catalogKind[models.Plan, catalog.PlanInput] {
	return catalogKind[models.Plan, catalog.PlanInput]{
		rows: c.Plans,
		id:   func(pl models.Plan) uuid.UUID { return pl.ID },
		name: func(pl models.Plan) string { return pl.Name },
		created: func(pl models.Plan, _ catalog.PlanInput) map[string]any {
			summary := map[string]any{"product_id": pl.ProductID.String(), "rate_limit": pl.RateLimit.V}
			if pl.Quota.V != nil {
				summary["quota"] = pl.Quota.V
			}
			return summary
		},
		deleted: func(pl models.Plan) map[string]any {
			return map[string]any{"product_id": pl.ProductID.String()}
		},
	}
}

// noFilter is the query filter of a list that has none (a product's plans).
func noFilter(echo.Context) (struct{}, error) { return struct{}{}, nil }

func (a *API) listPlans(ctx context.Context, tenantID, productID uuid.UUID, _ struct{}, p store.Page) ([]models.Plan, string, error) {
	return a.catalog.ListPlans(ctx, tenantID, productID, p)
}
