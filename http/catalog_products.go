package http

import (
	"errors"
	"fmt"
	nethttp "net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// ---- gateway templates ----

type gatewayBody struct {
	Name         string                   `json:"name"`
	Description  string                   `json:"description"`
	GatewayClass string                   `json:"gateway_class"`
	Listeners    []models.GatewayListener `json:"listeners"`
	Labels       map[string]string        `json:"labels"`
	Status       string                   `json:"status"`
}

func gatewayBodyOf(g models.Gateway) gatewayBody {
	return gatewayBody{Name: g.Name, Description: g.Description, GatewayClass: g.GatewayClass, Listeners: g.Listeners.V, Labels: g.Labels, Status: g.Status}
}

func (b *gatewayBody) validate() (models.Gateway, error) {
	var v validator
	v.check(len(b.Name) >= 2 && k8sNameRe.MatchString(b.Name), "name", "an RFC 1123 label of 2 to 63 lower-case letters, digits and dashes")
	v.text("description", b.Description, 0, 500)
	v.check(isOneOf(b.GatewayClass, models.GatewayClassEnvoy, models.GatewayClassNginx), "gateway_class", "must be envoy-gateway or nginx")
	v.check(len(b.Listeners) >= 1 && len(b.Listeners) <= maxListItems, "listeners", fmt.Sprintf("1 to %d listeners", maxListItems))
	names, ports := map[string]int{}, map[int]int{}
	for i, l := range b.Listeners {
		f := fieldAt("listeners", i)
		v.check(k8sNameRe.MatchString(l.Name), f+".name", "an RFC 1123 label: 1-63 lower-case letters, digits and dashes")
		if j, dup := names[l.Name]; dup {
			v.add(f+".name", fmt.Sprintf("duplicate of listeners[%d].name", j))
		} else {
			names[l.Name] = i
		}
		v.port(f+".port", l.Port)
		if j, dup := ports[l.Port]; dup {
			v.add(f+".port", fmt.Sprintf("duplicate of listeners[%d].port", j))
		} else {
			ports[l.Port] = i
		}
		if !isOneOf(l.Protocol, models.ProtocolHTTP, models.ProtocolHTTPS, models.ProtocolTCP, models.ProtocolTLS) {
			v.add(f+".protocol", "must be HTTP, HTTPS, TCP or TLS")
			continue
		}
		if l.Hostname != "" {
			if l.Protocol == models.ProtocolTCP {
				v.add(f+".hostname", "a TCP listener matches no host name")
			} else {
				v.gatewayHostname(f+".hostname", l.Hostname)
			}
		}
		validateListenerTLS(&v, f+".tls", l)
		if l.TLS != nil {
			b.Listeners[i].TLS.CertificateRefs = orEmpty(l.TLS.CertificateRefs)
		}
	}
	v.labels("labels", b.Labels)
	v.check(isOneOf(b.Status, models.GatewayActive, models.GatewayInactive), "status", "must be active or inactive")
	if err := v.err(); err != nil {
		return models.Gateway{}, err
	}
	labels := models.Labels(b.Labels)
	if labels == nil {
		labels = models.Labels{}
	}
	return models.Gateway{Name: b.Name, Description: b.Description, GatewayClass: b.GatewayClass,
		Listeners: models.JSON[[]models.GatewayListener]{V: b.Listeners}, Labels: labels, Status: b.Status}, nil
}

// validateListenerTLS applies the Gateway API rules: HTTPS terminates TLS with a certificate;
// TLS passes it through or terminates it; HTTP and TCP have no TLS.
func validateListenerTLS(v *validator, field string, l models.GatewayListener) {
	t := l.TLS
	switch l.Protocol {
	case models.ProtocolHTTP, models.ProtocolTCP:
		v.check(t == nil, field, "only HTTPS and TLS listeners have TLS settings")
		return
	case models.ProtocolHTTPS:
		if t == nil {
			v.add(field, "an HTTPS listener needs tls with mode Terminate and a certificate")
			return
		}
		v.check(t.Mode == models.TLSTerminate, field+".mode", "an HTTPS listener terminates TLS: mode must be Terminate")
	case models.ProtocolTLS:
		if t == nil {
			v.add(field, "a TLS listener needs tls with mode Passthrough or Terminate")
			return
		}
		v.check(isOneOf(t.Mode, models.TLSTerminate, models.TLSPassthrough), field+".mode", "must be Terminate or Passthrough")
	}
	if t.Mode == models.TLSTerminate {
		v.check(len(t.CertificateRefs) >= 1 && len(t.CertificateRefs) <= 8, field+".certificate_refs", "1 to 8 certificate references to terminate TLS")
	} else {
		v.check(len(t.CertificateRefs) == 0, field+".certificate_refs", "Passthrough uses no certificate")
	}
	for i, r := range t.CertificateRefs {
		f := fieldAt(field+".certificate_refs", i)
		v.check(len(r.Name) <= 253 && gwHostnameRe.MatchString(r.Name) && !strings.HasPrefix(r.Name, "*"), f+".name", "a Kubernetes secret name")
		v.check(r.Namespace == "" || k8sNameRe.MatchString(r.Namespace), f+".namespace", "a Kubernetes namespace name")
	}
}

func (a *API) createGateway(c echo.Context) error {
	var body gatewayBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	if body.GatewayClass == "" {
		body.GatewayClass = models.GatewayClassEnvoy
	}
	if body.Status == "" {
		body.Status = models.GatewayInactive
	}
	g, err := body.validate()
	if err != nil {
		return err
	}
	g.TenantID = Tenant(c).ID
	if err := a.store.CreateGateway(c.Request().Context(), &g); err != nil {
		return catalogError(err, "gateway")
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
	rows, next, err := a.store.ListGateways(c.Request().Context(), Tenant(c).ID, f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getGateway(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	g, err := a.store.GetGateway(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "gateway")
	}
	return c.JSON(nethttp.StatusOK, g)
}

func (a *API) updateGateway(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdateGateway(ctx, tenantID, id, func(g *models.Gateway) error {
		if err := a.guardUsage(ctx, tenantID, store.KindGateway, id); err != nil {
			return err
		}
		var body gatewayBody
		if err := applyPatch(gatewayBodyOf(*g), patch, &body); err != nil {
			return err
		}
		// The name is how publishes and the cluster's objects refer to the template.
		var v validator
		immutable(&v, "name", g.Name, body.Name)
		if err := v.err(); err != nil {
			return err
		}
		next, err := body.validate()
		if err != nil {
			return err
		}
		next.ID, next.TenantID, next.CreatedAt = g.ID, g.TenantID, g.CreatedAt
		*g = next
		return nil
	})
	if err != nil {
		return catalogError(err, "gateway")
	}
	Audit(c, AuditEntry{Action: "gateway.update", ResourceType: store.KindGateway, ResourceID: id.String(), ResourceName: after.Name,
		Summary: changeSummary(gatewayBodyOf(before), gatewayBodyOf(after))})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteGateway(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	g, err := a.store.DeleteGateway(ctx, tenantID, id, func(models.Gateway) error {
		return a.guardUsage(ctx, tenantID, store.KindGateway, id)
	})
	if err != nil {
		return catalogError(err, "gateway")
	}
	Audit(c, AuditEntry{Action: "gateway.delete", ResourceType: store.KindGateway, ResourceID: id.String(), ResourceName: g.Name,
		Summary: map[string]any{"gateway_class": g.GatewayClass}})
	return c.NoContent(nethttp.StatusNoContent)
}

// ---- products ----

// productBody is the writable part of a product. Its status changes only through the
// activate, deactivate and archive actions, which each state a rule.
type productBody struct {
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	Description string   `json:"description"`
	Categories  []string `json:"categories"`
	DocsURL     string   `json:"docs_url"`
	LogoURL     string   `json:"logo_url"`
	APIServices []string `json:"api_services"`
}

func productBodyOf(p models.Product) productBody {
	ids := make([]string, len(p.APIServices))
	for i, id := range p.APIServices {
		ids[i] = id.String()
	}
	return productBody{Name: p.Name, Version: p.Version, Description: p.Description, Categories: p.Categories,
		DocsURL: p.DocsURL, LogoURL: p.LogoURL, APIServices: ids}
}

func (b *productBody) validate() (models.Product, error) {
	var v validator
	b.Name = strings.TrimSpace(b.Name)
	v.text("name", b.Name, 2, 100)
	v.check(b.Version != "" && len(b.Version) <= 50 && !strings.ContainsAny(b.Version, " \t\r\n"), "version", "required: 1 to 50 characters without spaces")
	v.text("description", b.Description, 0, 2000)
	v.check(len(b.Categories) <= 20, "categories", "at most 20")
	seen := map[string]bool{}
	for i, cat := range b.Categories {
		v.text(fieldAt("categories", i), cat, 1, 50)
		v.check(!seen[strings.ToLower(cat)], fieldAt("categories", i), "duplicate")
		seen[strings.ToLower(cat)] = true
	}
	v.webURL("docs_url", b.DocsURL)
	v.webURL("logo_url", b.LogoURL)
	v.check(len(b.APIServices) <= 100, "api_services", "at most 100")
	ids := parseIDs(&v, "api_services", b.APIServices)
	if err := v.err(); err != nil {
		return models.Product{}, err
	}
	return models.Product{Name: b.Name, Version: b.Version, Description: b.Description, Categories: orEmpty(b.Categories),
		DocsURL: b.DocsURL, LogoURL: b.LogoURL, APIServices: ids}, nil
}

func (a *API) createProduct(c echo.Context) error {
	var body productBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	p, err := body.validate()
	if err != nil {
		return err
	}
	p.TenantID, p.Status = Tenant(c).ID, models.ProductDraft
	if err := a.store.CreateProduct(c.Request().Context(), &p); err != nil {
		return catalogError(err, "product")
	}
	Audit(c, AuditEntry{Action: "product.create", ResourceType: store.KindProduct, ResourceID: p.ID.String(), ResourceName: p.Name,
		Summary: map[string]any{"version": p.Version, "status": p.Status, "api_services": body.APIServices}})
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
	rows, next, err := a.store.ListProducts(c.Request().Context(), Tenant(c).ID, store.ProductFilter{Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getProduct(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	p, err := a.store.GetProduct(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "product")
	}
	return c.JSON(nethttp.StatusOK, p)
}

func (a *API) updateProduct(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	if _, ok := patch["status"]; ok {
		return ValidationFailed(FieldError{Field: "status", Message: "changes with POST /v1/provider/products/{id}/activate, /deactivate or /archive"})
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdateProduct(ctx, tenantID, id, func(p *models.Product) error {
		if err := a.guardUsage(ctx, tenantID, store.KindProduct, id); err != nil {
			return err
		}
		var body productBody
		if err := applyPatch(productBodyOf(*p), patch, &body); err != nil {
			return err
		}
		next, err := body.validate()
		if err != nil {
			return err
		}
		p.Name, p.Version, p.Description, p.Categories = next.Name, next.Version, next.Description, next.Categories
		p.DocsURL, p.LogoURL, p.APIServices = next.DocsURL, next.LogoURL, next.APIServices
		return nil
	})
	if err != nil {
		return catalogError(err, "product")
	}
	summary := changeSummary(productBodyOf(before), productBodyOf(after))
	if _, ok := summary["api_services"]; ok {
		summary["api_services"] = map[string]any{"before": productBodyOf(before).APIServices, "after": productBodyOf(after).APIServices}
	}
	Audit(c, AuditEntry{Action: "product.update", ResourceType: store.KindProduct, ResourceID: id.String(), ResourceName: after.Name, Summary: summary})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteProduct(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	p, err := a.store.DeleteProduct(ctx, tenantID, id, func(models.Product) error {
		return a.guardUsage(ctx, tenantID, store.KindProduct, id)
	})
	var tr *store.TransitionError
	if errors.As(err, &tr) {
		return Conflict("product_active", "an active product cannot be deleted; deactivate it first", tr.From)
	}
	if err != nil {
		return catalogError(err, "product")
	}
	Audit(c, AuditEntry{Action: "product.delete", ResourceType: store.KindProduct, ResourceID: id.String(), ResourceName: p.Name,
		Summary: map[string]any{"version": p.Version, "cascade": "plans of the product"}})
	return c.NoContent(nethttp.StatusNoContent)
}

func (a *API) activateProduct(c echo.Context) error {
	return a.setProductStatus(c, models.ProductActive, "product.activate", false)
}

// Going back to draft takes the product off sale, so a product a publish uses stays active.
func (a *API) deactivateProduct(c echo.Context) error {
	return a.setProductStatus(c, models.ProductDraft, "product.deactivate", true)
}

// Archiving is final; a product a publish still uses is withdrawn first.
func (a *API) archiveProduct(c echo.Context) error {
	return a.setProductStatus(c, models.ProductArchived, "product.archive", true)
}

func (a *API) setProductStatus(c echo.Context, to, action string, guarded bool) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	var guard func(models.Product) error
	if guarded {
		guard = func(models.Product) error { return a.guardUsage(ctx, tenantID, store.KindProduct, id) }
	}
	before, after, err := a.store.SetProductStatus(ctx, tenantID, id, to, guard)
	if err != nil {
		return catalogError(err, "product")
	}
	Audit(c, AuditEntry{Action: action, ResourceType: store.KindProduct, ResourceID: id.String(), ResourceName: after.Name,
		Summary: map[string]any{"status": map[string]string{"before": before.Status, "after": after.Status}}})
	return c.JSON(nethttp.StatusOK, after)
}

// ---- plans ----

type planBody struct {
	Name        string                `json:"name"`
	Description string                `json:"description"`
	RateLimit   *models.PlanRateLimit `json:"rate_limit"`
	Quota       *models.PlanQuota     `json:"quota"`
	IsDefault   bool                  `json:"is_default"`
}

func planBodyOf(p models.Plan) planBody {
	rl := p.RateLimit.V
	return planBody{Name: p.Name, Description: p.Description, RateLimit: &rl, Quota: p.Quota.V, IsDefault: p.IsDefault}
}

func (b *planBody) validate() (models.Plan, error) {
	var v validator
	b.Name = strings.TrimSpace(b.Name)
	v.text("name", b.Name, 1, 100)
	v.text("description", b.Description, 0, 1000)
	if b.RateLimit == nil {
		v.add("rate_limit", "required: {requests, period}")
	} else {
		v.check(b.RateLimit.Requests >= 1 && b.RateLimit.Requests <= 1_000_000_000, "rate_limit.requests", "must be from 1 to 1000000000")
		v.check(isOneOf(b.RateLimit.Period, models.PeriodSecond, models.PeriodMinute, models.PeriodHour, models.PeriodDay), "rate_limit.period", "must be second, minute, hour or day")
	}
	if q := b.Quota; q != nil {
		v.check(q.Requests >= 1, "quota.requests", "must be at least 1")
		v.check(isOneOf(q.Period, models.PeriodDay, models.PeriodMonth), "quota.period", "must be day or month")
	}
	if err := v.err(); err != nil {
		return models.Plan{}, err
	}
	return models.Plan{Name: b.Name, Description: b.Description, RateLimit: models.JSON[models.PlanRateLimit]{V: *b.RateLimit},
		Quota: models.JSON[*models.PlanQuota]{V: b.Quota}, IsDefault: b.IsDefault}, nil
}

func (a *API) createPlan(c echo.Context) error {
	productID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var body planBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	pl, err := body.validate()
	if err != nil {
		return err
	}
	pl.TenantID, pl.ProductID = Tenant(c).ID, productID
	if err := a.store.CreatePlan(c.Request().Context(), &pl); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return NotFound("product")
		}
		return catalogError(err, "plan")
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
	rows, next, err := a.store.ListPlans(c.Request().Context(), Tenant(c).ID, productID, p)
	if err != nil {
		return catalogError(err, "product")
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getPlan(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	pl, err := a.store.GetPlan(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "plan")
	}
	return c.JSON(nethttp.StatusOK, pl)
}

func (a *API) updatePlan(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdatePlan(ctx, tenantID, id, func(pl *models.Plan) error {
		if err := a.guardUsage(ctx, tenantID, store.KindPlan, id); err != nil {
			return err
		}
		var body planBody
		if err := applyPatch(planBodyOf(*pl), patch, &body); err != nil {
			return err
		}
		next, err := body.validate()
		if err != nil {
			return err
		}
		pl.Name, pl.Description, pl.RateLimit, pl.Quota, pl.IsDefault = next.Name, next.Description, next.RateLimit, next.Quota, next.IsDefault
		return nil
	})
	if err != nil {
		return catalogError(err, "plan")
	}
	Audit(c, AuditEntry{Action: "plan.update", ResourceType: store.KindPlan, ResourceID: id.String(), ResourceName: after.Name,
		Summary: changeSummary(planBodyOf(before), planBodyOf(after))})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deletePlan(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	pl, err := a.store.DeletePlan(ctx, tenantID, id, func(models.Plan) error {
		return a.guardUsage(ctx, tenantID, store.KindPlan, id)
	})
	if err != nil {
		return catalogError(err, "plan")
	}
	Audit(c, AuditEntry{Action: "plan.delete", ResourceType: store.KindPlan, ResourceID: id.String(), ResourceName: pl.Name,
		Summary: map[string]any{"product_id": pl.ProductID.String()}})
	return c.NoContent(nethttp.StatusNoContent)
}
