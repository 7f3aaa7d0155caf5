package http

import (
	nethttp "net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/catalog"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// ---- API services ----

func apiServiceKind(c *catalog.Catalog) catalogKind[models.APIService, catalog.APIServiceInput] {
	return catalogKind[models.APIService, catalog.APIServiceInput]{
		rows: c.APIServices,
		name: func(s models.APIService) string { return s.Name },
		deleted: func(s models.APIService) map[string]any {
			return map[string]any{"version": s.Version, "cascade": "routes, backends and policies of the service"}
		},
	}
}

func (a *API) createAPIService(c echo.Context) error {
	var in catalog.APIServiceInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	s, err := a.catalog.CreateAPIService(c.Request().Context(), Tenant(c).ID, in)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "api_service.create", ResourceType: store.KindAPIService, ResourceID: s.ID.String(), ResourceName: s.Name,
		Summary: map[string]any{"version": s.Version, "status": s.Status}})
	return c.JSON(nethttp.StatusCreated, s)
}

func (a *API) listAPIServices(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	st, err := queryEnum(c, "status", models.ServiceActive, models.ServiceInactive)
	if err != nil {
		return err
	}
	rows, next, err := a.catalog.ListAPIServices(c.Request().Context(), Tenant(c).ID, store.APIServiceFilter{Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

// ---- routes ----

func routeKind(c *catalog.Catalog) catalogKind[models.Route, catalog.RouteInput] {
	return catalogKind[models.Route, catalog.RouteInput]{
		rows: c.Routes,
		name: func(r models.Route) string { return r.Name },
		deleted: func(r models.Route) map[string]any {
			return map[string]any{"api_service_id": r.APIServiceID.String()}
		},
	}
}

func (a *API) createRoute(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var in catalog.RouteInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	r, err := a.catalog.CreateRoute(c.Request().Context(), Tenant(c).ID, serviceID, in)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "route.create", ResourceType: store.KindRoute, ResourceID: r.ID.String(), ResourceName: r.Name,
		Summary: map[string]any{"api_service_id": serviceID.String(), "status": r.Status, "paths": len(r.Paths.V), "backends": len(r.BackendRefs.V)}})
	return c.JSON(nethttp.StatusCreated, r)
}

func (a *API) listRoutes(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	st, err := queryEnum(c, "status", models.RouteActive, models.RouteInactive, models.RouteDraft)
	if err != nil {
		return err
	}
	rows, next, err := a.catalog.ListRoutes(c.Request().Context(), Tenant(c).ID, serviceID, store.StatusFilter{Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
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
		name: func(b models.Backend) string { return b.Name },
		deleted: func(b models.Backend) map[string]any {
			return map[string]any{"api_service_id": b.APIServiceID.String()}
		},
	}
}

func (a *API) createBackend(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var in catalog.BackendInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	b, err := a.catalog.CreateBackend(c.Request().Context(), Tenant(c).ID, serviceID, in)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "backend.create", ResourceType: store.KindBackend, ResourceID: b.ID.String(), ResourceName: b.Name,
		Summary: map[string]any{"api_service_id": serviceID.String(), "scheme": b.Scheme, "endpoints": len(b.Endpoints.V), "status": b.Status}})
	return c.JSON(nethttp.StatusCreated, b)
}

func (a *API) listBackends(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	st, err := queryEnum(c, "status", models.BackendActive, models.BackendInactive)
	if err != nil {
		return err
	}
	rows, next, err := a.catalog.ListBackends(c.Request().Context(), Tenant(c).ID, serviceID, store.StatusFilter{Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}
