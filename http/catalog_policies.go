package http

import (
	"encoding/json"
	"errors"
	nethttp "net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// policyBody is the writable part of a policy. Scope and route_id are set when the policy is
// created (by where it is created) and type fixes what the spec means, so all three are
// immutable afterwards.
type policyBody struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Type        string          `json:"type"`
	Spec        json.RawMessage `json:"spec"`
	Priority    *int            `json:"priority"`
	Enabled     *bool           `json:"enabled"`
	Scope       string          `json:"scope,omitempty"`
	RouteID     *string         `json:"route_id,omitempty"`
}

func policyBodyOf(p models.Policy) policyBody {
	prio, enabled := p.Priority, p.Enabled
	b := policyBody{Name: p.Name, Description: p.Description, Type: p.Type, Spec: p.Spec.V, Priority: &prio, Enabled: &enabled, Scope: p.Scope}
	if p.RouteID != nil {
		s := p.RouteID.String()
		b.RouteID = &s
	}
	return b
}

// validate checks everything but the scope and returns the policy row with its canonical spec.
func (b *policyBody) validate(v *validator) models.Policy {
	v.check(k8sNameRe.MatchString(b.Name), "name", "an RFC 1123 label: 1-63 lower-case letters, digits and dashes")
	v.text("description", b.Description, 0, 500)
	p := models.Policy{Name: b.Name, Description: b.Description, Type: b.Type, Category: models.PolicyCategory(b.Type), Priority: 100, Enabled: true}
	if b.Priority != nil {
		p.Priority = *b.Priority
	}
	v.priority("priority", p.Priority)
	if b.Enabled != nil {
		p.Enabled = *b.Enabled
	}
	spec, errs := decodeSpec(b.Type, b.Spec)
	if len(errs) > 0 {
		v.errs = append(v.errs, errs...)
		return p
	}
	validateSpec(v, spec)
	// Stored in its canonical form: the fields of the type's struct, CIDRs normalised.
	canonical, _ := json.Marshal(spec)
	p.Spec = models.JSON[json.RawMessage]{V: canonical}
	return p
}

func (a *API) createGlobalPolicy(c echo.Context) error {
	var body policyBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	var v validator
	v.check(body.Scope == "" || body.Scope == models.ScopeGlobal, "scope", "must be global here; service and route policies are created under /v1/provider/api-services/{id}/policies")
	v.check(body.RouteID == nil, "route_id", "only for route policies")
	p := body.validate(&v)
	if err := v.err(); err != nil {
		return err
	}
	p.TenantID, p.Scope = Tenant(c).ID, models.ScopeGlobal
	return a.createPolicy(c, &p)
}

func (a *API) createServicePolicy(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var body policyBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	if body.Scope == "" {
		body.Scope = models.ScopeService
	}
	var v validator
	var routeID *uuid.UUID
	switch body.Scope {
	case models.ScopeService:
		v.check(body.RouteID == nil, "route_id", "only for route policies")
	case models.ScopeRoute:
		if body.RouteID == nil {
			v.add("route_id", "required for a route policy")
		} else if id, err := uuid.Parse(*body.RouteID); err != nil {
			v.add("route_id", "must be a UUID")
		} else {
			routeID = &id
		}
	case models.ScopeGlobal:
		v.add("scope", "global policies are created with POST /v1/provider/policies")
	default:
		v.add("scope", "must be service or route")
	}
	p := body.validate(&v)
	if err := v.err(); err != nil {
		return err
	}
	p.TenantID, p.Scope, p.APIServiceID, p.RouteID = Tenant(c).ID, body.Scope, &serviceID, routeID
	return a.createPolicy(c, &p)
}

func (a *API) createPolicy(c echo.Context, p *models.Policy) error {
	if err := a.store.CreatePolicy(c.Request().Context(), p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return NotFound("API service")
		}
		return catalogError(err, "policy")
	}
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
	rows, next, err := a.store.ListGlobalPolicies(c.Request().Context(), Tenant(c).ID, f, p)
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
	rows, next, err := a.store.ListServicePolicies(c.Request().Context(), Tenant(c).ID, serviceID, f, p)
	if err != nil {
		return catalogError(err, "API service")
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getPolicy(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	p, err := a.store.GetPolicy(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "policy")
	}
	return c.JSON(nethttp.StatusOK, p)
}

func (a *API) updatePolicy(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdatePolicy(ctx, tenantID, id, func(p *models.Policy) error {
		if err := a.guardUsage(ctx, tenantID, store.KindPolicy, id); err != nil {
			return err
		}
		cur := policyBodyOf(*p)
		var body policyBody
		if err := applyPatch(cur, patch, &body); err != nil {
			return err
		}
		var v validator
		immutable(&v, "type", cur.Type, body.Type)
		immutable(&v, "scope", cur.Scope, body.Scope)
		immutable(&v, "route_id", cur.RouteID, body.RouteID)
		if len(v.errs) > 0 {
			return v.err()
		}
		next := body.validate(&v)
		if err := v.err(); err != nil {
			return err
		}
		p.Name, p.Description, p.Spec, p.Priority, p.Enabled = next.Name, next.Description, next.Spec, next.Priority, next.Enabled
		return nil
	})
	if err != nil {
		return catalogError(err, "policy")
	}
	Audit(c, AuditEntry{Action: "policy.update", ResourceType: store.KindPolicy, ResourceID: id.String(), ResourceName: after.Name,
		Summary: changeSummary(policyBodyOf(before), policyBodyOf(after))})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deletePolicy(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	p, err := a.store.DeletePolicy(ctx, tenantID, id, func(models.Policy) error {
		return a.guardUsage(ctx, tenantID, store.KindPolicy, id)
	})
	if err != nil {
		return catalogError(err, "policy")
	}
	Audit(c, AuditEntry{Action: "policy.delete", ResourceType: store.KindPolicy, ResourceID: id.String(), ResourceName: p.Name,
		Summary: map[string]any{"type": p.Type, "scope": p.Scope}})
	return c.NoContent(nethttp.StatusNoContent)
}
