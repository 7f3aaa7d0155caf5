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

// ---- gateway templates ----

func gatewayKind(c *catalog.Catalog) catalogKind[models.Gateway, catalog.GatewayInput] {
	return catalogKind[models.Gateway, catalog.GatewayInput]{
		rows: c.Gateways,
		name: func(g models.Gateway) string { return g.Name },
		deleted: func(g models.Gateway) map[string]any {
			return map[string]any{"gateway_class": g.GatewayClass}
		},
	}
}

func (a *API) createGateway(c echo.Context) error {
	var in catalog.GatewayInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	g, err := a.catalog.CreateGateway(c.Request().Context(), Tenant(c).ID, in)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "gateway.create", ResourceType: store.KindGateway, ResourceID: g.ID.String(), ResourceName: g.Name,
		Summary: map[string]any{"gateway_class": g.GatewayClass, "listeners": len(g.Listeners.V), "status": g.Status}})
	return c.JSON(nethttp.StatusCreated, g)
}

func (a *API) listGateways(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	var f store.GatewayFilter
	if f.Status, err = queryEnum(c, "status", models.GatewayActive, models.GatewayInactive); err != nil {
		return err
	}
	if f.GatewayClass, err = queryEnum(c, "gateway_class", models.GatewayClassEnvoy, models.GatewayClassNginx); err != nil {
		return err
	}
	rows, next, err := a.catalog.ListGateways(c.Request().Context(), Tenant(c).ID, f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

// ---- products ----

func productKind(c *catalog.Catalog) catalogKind[models.Product, catalog.ProductInput] {
	return catalogKind[models.Product, catalog.ProductInput]{
		rows: c.Products,
		name: func(p models.Product) string { return p.Name },
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

func (a *API) createProduct(c echo.Context) error {
	var in catalog.ProductInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	p, err := a.catalog.CreateProduct(c.Request().Context(), Tenant(c).ID, in)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "product.create", ResourceType: store.KindProduct, ResourceID: p.ID.String(), ResourceName: p.Name,
		Summary: map[string]any{"version": p.Version, "status": p.Status, "api_services": in.APIServices}})
	return c.JSON(nethttp.StatusCreated, p)
}

func (a *API) listProducts(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	st, err := queryEnum(c, "status", models.ProductDraft, models.ProductActive, models.ProductArchived)
	if err != nil {
		return err
	}
	rows, next, err := a.catalog.ListProducts(c.Request().Context(), Tenant(c).ID, store.ProductFilter{Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) activateProduct(c echo.Context) error {
	return productStatus(c, a.catalog.ActivateProduct, "product.activate")
}

func (a *API) deactivateProduct(c echo.Context) error {
	return productStatus(c, a.catalog.DeactivateProduct, "product.deactivate")
}

func (a *API) archiveProduct(c echo.Context) error {
	return productStatus(c, a.catalog.ArchiveProduct, "product.archive")
}

// productStatus serves a product's status actions; change is the use case of the action.
func productStatus(c echo.Context, change func(ctx context.Context, tenantID, id uuid.UUID) (before, after models.Product, err error), action string) error {
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

// ---- plans ----

func planKind(c *catalog.Catalog) catalogKind[models.Plan, catalog.PlanInput] {
	return catalogKind[models.Plan, catalog.PlanInput]{
		rows: c.Plans,
		name: func(pl models.Plan) string { return pl.Name },
		deleted: func(pl models.Plan) map[string]any {
			return map[string]any{"product_id": pl.ProductID.String()}
		},
	}
}

func (a *API) createPlan(c echo.Context) error {
	productID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var in catalog.PlanInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	pl, err := a.catalog.CreatePlan(c.Request().Context(), Tenant(c).ID, productID, in)
	if err != nil {
		return err
	}
	summary := map[string]any{"product_id": productID.String(), "rate_limit": pl.RateLimit.V}
	if pl.Quota.V != nil {
		summary["quota"] = pl.Quota.V
	}
	Audit(c, AuditEntry{Action: "plan.create", ResourceType: store.KindPlan, ResourceID: pl.ID.String(), ResourceName: pl.Name, Summary: summary})
	return c.JSON(nethttp.StatusCreated, pl)
}

func (a *API) listPlans(c echo.Context) error {
	productID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, next, err := a.catalog.ListPlans(c.Request().Context(), Tenant(c).ID, productID, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}
