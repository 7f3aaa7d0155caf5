package http

import (
	nethttp "net/http"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/catalog"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

func policyKind(c *catalog.Catalog) catalogKind[models.Policy, catalog.PolicyInput] {
	return catalogKind[models.Policy, catalog.PolicyInput]{
		rows: c.Policies,
		name: func(p models.Policy) string { return p.Name },
		deleted: func(p models.Policy) map[string]any {
			return map[string]any{"type": p.Type, "scope": p.Scope}
		},
	}
}

func (a *API) createGlobalPolicy(c echo.Context) error {
	var in catalog.PolicyInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	p, err := a.catalog.CreateGlobalPolicy(c.Request().Context(), Tenant(c).ID, in)
	if err != nil {
		return err
	}
	return policyCreated(c, p)
}

func (a *API) createServicePolicy(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var in catalog.PolicyInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	p, err := a.catalog.CreateServicePolicy(c.Request().Context(), Tenant(c).ID, serviceID, in)
	if err != nil {
		return err
	}
	return policyCreated(c, p)
}

func policyCreated(c echo.Context, p models.Policy) error {
	summary := map[string]any{"type": p.Type, "scope": p.Scope, "priority": p.Priority, "enabled": p.Enabled}
	if p.APIServiceID != nil {
		summary["api_service_id"] = p.APIServiceID.String()
	}
	if p.RouteID != nil {
		summary["route_id"] = p.RouteID.String()
	}
	Audit(c, AuditEntry{Action: "policy.create", ResourceType: store.KindPolicy, ResourceID: p.ID.String(), ResourceName: p.Name, Summary: summary})
	return c.JSON(nethttp.StatusCreated, p)
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

func (a *API) listGlobalPolicies(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	f, err := policyFilter(c)
	if err != nil {
		return err
	}
	rows, next, err := a.catalog.ListGlobalPolicies(c.Request().Context(), Tenant(c).ID, f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) listServicePolicies(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	f, err := policyFilter(c)
	if err != nil {
		return err
	}
	if f.Scope, err = queryEnum(c, "scope", models.ScopeService, models.ScopeRoute); err != nil {
		return err
	}
	if f.RouteID, err = queryUUID(c, "route_id"); err != nil {
		return err
	}
	rows, next, err := a.catalog.ListServicePolicies(c.Request().Context(), Tenant(c).ID, serviceID, f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}
