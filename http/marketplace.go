package http

import (
	"errors"
	nethttp "net/http"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// registerMarketplace adds the marketplace (anonymous on public, with the invited private
// publishes on cust), the provider's invitations to private publishes (prov) and the
// customer's client apps (cust).
func (a *API) registerMarketplace(public, cust, prov *echo.Group) {
	public.GET("/products", a.listPublicProducts)
	public.GET("/products/:id", a.getPublicProduct)
	cust.GET("/catalog", a.listCustomerCatalog, RequireRole(models.RoleViewer))
	cust.GET("/catalog/:id", a.getCustomerCatalog, RequireRole(models.RoleViewer))
	prov.POST("/product-publishes/:id/invitations", a.createInvitation, RequireRole(models.RoleAdmin))
	prov.GET("/product-publishes/:id/invitations", a.listInvitations, RequireRole(models.RoleViewer))
	prov.DELETE("/product-publishes/:id/invitations/:tenant_id", a.deleteInvitation, RequireRole(models.RoleAdmin))
	a.registerApps(cust)
}

const maxSearchLen = 200

// marketFilter reads q, category and environment.
func marketFilter(c echo.Context) (store.MarketFilter, error) {
	var f store.MarketFilter
	f.Q = strings.TrimSpace(c.QueryParam("q"))
	if utf8.RuneCountInString(f.Q) > maxSearchLen {
		return f, BadRequest("invalid_query", "the search text is too long", FieldError{Field: "q", Message: "at most 200 characters"})
	}
	f.Category = strings.TrimSpace(c.QueryParam("category"))
	if utf8.RuneCountInString(f.Category) > 50 {
		return f, BadRequest("invalid_query", "the category is too long", FieldError{Field: "category", Message: "at most 50 characters"})
	}
	var err error
	f.Environment, err = queryEnum(c, "environment", models.EnvDev, models.EnvStage, models.EnvProd)
	return f, err
}

func (a *API) listMarket(c echo.Context, customer *uuid.UUID) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	f, err := marketFilter(c)
	if err != nil {
		return err
	}
	f.Customer = customer
	items, next, err := a.store.ListMarketplace(c.Request().Context(), f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(items, next))
}

func (a *API) getMarket(c echo.Context, customer *uuid.UUID) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	item, err := a.store.GetMarketplace(c.Request().Context(), id, customer)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("product")
	}
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, item)
}

func (a *API) listPublicProducts(c echo.Context) error { return a.listMarket(c, nil) }

func (a *API) getPublicProduct(c echo.Context) error { return a.getMarket(c, nil) }

func (a *API) listCustomerCatalog(c echo.Context) error {
	id := tenantOf(c).ID
	return a.listMarket(c, &id)
}

func (a *API) getCustomerCatalog(c echo.Context) error {
	id := tenantOf(c).ID
	return a.getMarket(c, &id)
}

// ---- invitations ----

func (a *API) createInvitation(c echo.Context) error {
	p, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	var req struct {
		TenantSlug string `json:"tenant_slug"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var v validator
	v.check(k8sNameRe.MatchString(req.TenantSlug), "tenant_slug", "required: the slug of a customer tenant")
	if err := v.err(); err != nil {
		return err
	}
	inv, err := a.store.CreateInvitation(c.Request().Context(), p.ID, req.TenantSlug, principalOf(c).Email)
	switch {
	case errors.Is(err, store.ErrNotCustomer):
		return ValidationFailed(FieldError{Field: "tenant_slug", Message: "no active customer tenant with this slug"})
	case errors.Is(err, store.ErrConflict):
		return Conflict("already_invited", "tenant "+req.TenantSlug+" is already invited to this publish", "")
	case err != nil:
		return err
	}
	Audit(c, AuditEntry{Action: "invitation.create", ResourceType: "publish_invitation", ResourceID: p.ID.String() + "/" + inv.CustomerTenantID.String(),
		ResourceName: inv.TenantSlug, Summary: map[string]any{"publish_id": p.ID, "hostname": p.Hostname, "customer_tenant_id": inv.CustomerTenantID,
			"tenant_slug": inv.TenantSlug, "visibility": p.Visibility}})
	return c.JSON(nethttp.StatusCreated, inv)
}

func (a *API) listInvitations(c echo.Context) error {
	p, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	pg, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListInvitations(c.Request().Context(), p.ID, pg)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) deleteInvitation(c echo.Context) error {
	p, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	tid, err := pathUUID(c, "tenant_id")
	if err != nil {
		return err
	}
	inv, err := a.store.DeleteInvitation(c.Request().Context(), p.ID, tid)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("invitation")
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "invitation.delete", ResourceType: "publish_invitation", ResourceID: p.ID.String() + "/" + tid.String(),
		ResourceName: inv.TenantSlug, Summary: map[string]any{"publish_id": p.ID, "hostname": p.Hostname, "customer_tenant_id": tid, "tenant_slug": inv.TenantSlug}})
	return c.NoContent(nethttp.StatusNoContent)
}
