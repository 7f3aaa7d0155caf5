package http

import (
	"errors"
	nethttp "net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// Tenant domains: operators grant a provider tenant the DNS domains it owns. Its publishes
// (publish hostname, route and listener hostnames, wildcards included) must lie under one of
// them; a domain that equals, contains or lies inside another tenant's is a 409.

func (a *API) tenantForDomains(c echo.Context) (models.Tenant, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.Tenant{}, err
	}
	t, err := a.store.GetTenant(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return t, NotFound("tenant")
	}
	return t, err
}

func (a *API) addTenantDomain(c echo.Context) error {
	t, err := a.tenantForDomains(c)
	if err != nil {
		return err
	}
	var req struct {
		Domain string `json:"domain"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	domain := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(req.Domain)), ".")
	var v validator
	v.check(len(domain) <= 253 && strings.Contains(domain, ".") && hostnameRe.MatchString(domain), "domain",
		"a DNS domain with at least two labels, such as acme.example (no wildcard: the domain covers every name under it)")
	v.check(t.Type == models.TenantProvider, "domain", "only provider tenants publish, so only they own domains")
	if err := v.err(); err != nil {
		return err
	}
	d := models.TenantDomain{TenantID: t.ID, Domain: domain, CreatedBy: principalOf(c).Email}
	err = a.store.AddTenantDomain(c.Request().Context(), &d)
	if errors.Is(err, store.ErrConflict) {
		// Whose it is stays unsaid.
		return Conflict("domain_taken", "the domain, or a domain containing it or inside it, belongs to a tenant", "")
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "tenant.domain_add", ResourceType: "tenant", ResourceID: t.ID.String(), ResourceName: t.Slug,
		Summary: map[string]any{"domain": d.Domain}})
	return c.JSON(nethttp.StatusCreated, d)
}

func (a *API) listTenantDomains(c echo.Context) error {
	t, err := a.tenantForDomains(c)
	if err != nil {
		return err
	}
	ds, err := a.store.ListTenantDomains(c.Request().Context(), t.ID)
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []models.TenantDomain{}
	}
	return c.JSON(nethttp.StatusOK, map[string]any{"items": ds, "next_cursor": nil})
}

func (a *API) deleteTenantDomain(c echo.Context) error {
	t, err := a.tenantForDomains(c)
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "domain_id")
	if err != nil {
		return err
	}
	d, err := a.store.DeleteTenantDomain(c.Request().Context(), t.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("domain")
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "tenant.domain_remove", ResourceType: "tenant", ResourceID: t.ID.String(), ResourceName: t.Slug,
		Summary: map[string]any{"domain": d.Domain}})
	return c.NoContent(nethttp.StatusNoContent)
}
