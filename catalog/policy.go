package catalog

import (
	"context"
	"encoding/json"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// PolicyInput is the writable part of a policy. Scope and route_id are set when the policy is
// created (by where it is created) and type fixes what the spec means, so all three are
// immutable afterwards.
type PolicyInput struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Type        string          `json:"type"`
	Spec        json.RawMessage `json:"spec"`
	Priority    *int            `json:"priority"`
	Enabled     *bool           `json:"enabled"`
	Scope       string          `json:"scope,omitempty"`
	RouteID     *string         `json:"route_id,omitempty"`
}

// PolicyInputOf returns the writable fields of a policy.
func PolicyInputOf(p models.Policy) PolicyInput {
	prio, enabled := p.Priority, p.Enabled
	in := PolicyInput{Name: p.Name, Description: p.Description, Type: p.Type, Spec: p.Spec.V, Priority: &prio, Enabled: &enabled, Scope: p.Scope}
	if p.RouteID != nil {
		s := p.RouteID.String()
		in.RouteID = &s
	}
	return in
}

// check checks everything but the scope and returns the policy row with its canonical spec.
func (in *PolicyInput) check(v *validation) models.Policy {
	v.labelName("name", in.Name)
	v.text("description", in.Description, 0, 500)
	p := models.Policy{Name: in.Name, Description: in.Description, Type: in.Type, Category: models.PolicyCategory(in.Type), Priority: 100, Enabled: true}
	if in.Priority != nil {
		p.Priority = *in.Priority
	}
	v.priority("priority", p.Priority)
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	spec, errs := decodeSpec(in.Type, in.Spec)
	if len(errs) > 0 {
		for _, e := range errs {
			v.Add(e.Field, e.Message)
		}
		return p
	}
	v.spec(spec)
	// Stored in its canonical form: the fields of the type's struct, CIDRs normalised.
	canonical, _ := json.Marshal(spec)
	p.Spec = models.JSON[json.RawMessage]{V: canonical}
	return p
}

// CreateGlobalPolicy creates a policy of the tenant's global scope.
func (c *Catalog) CreateGlobalPolicy(ctx context.Context, tenantID uuid.UUID, in PolicyInput) (models.Policy, error) {
	var v validation
	v.Check(in.Scope == "" || in.Scope == models.ScopeGlobal, "scope", "must be global here; service and route policies are created under /v1/provider/api-services/{id}/policies")
	v.Check(in.RouteID == nil, "route_id", "only for route policies")
	p := in.check(&v)
	if err := v.Err(); err != nil {
		return models.Policy{}, err
	}
	p.TenantID, p.Scope = tenantID, models.ScopeGlobal
	return p, c.createPolicy(ctx, &p)
}

// CreateServicePolicy creates a policy of a service, or (scope route) of one of its routes.
func (c *Catalog) CreateServicePolicy(ctx context.Context, tenantID, serviceID uuid.UUID, in PolicyInput) (models.Policy, error) {
	if in.Scope == "" {
		in.Scope = models.ScopeService
	}
	var v validation
	var routeID *uuid.UUID
	switch in.Scope {
	case models.ScopeService:
		v.Check(in.RouteID == nil, "route_id", "only for route policies")
	case models.ScopeRoute:
		if in.RouteID == nil {
			v.Add("route_id", "required for a route policy")
		} else if id, err := uuid.Parse(*in.RouteID); err != nil {
			v.Add("route_id", "must be a UUID")
		} else {
			routeID = &id
		}
	case models.ScopeGlobal:
		v.Add("scope", "global policies are created with POST /v1/provider/policies")
	default:
		v.Add("scope", "must be service or route")
	}
	p := in.check(&v)
	if err := v.Err(); err != nil {
		return models.Policy{}, err
	}
	p.TenantID, p.Scope, p.APIServiceID, p.RouteID = tenantID, in.Scope, &serviceID, routeID
	return p, c.createPolicy(ctx, &p)
}

func (c *Catalog) createPolicy(ctx context.Context, p *models.Policy) error {
	return createFailure(c.store.CreatePolicy(ctx, p), "API service", "policy")
}

// ListGlobalPolicies lists the tenant's global policies, newest first.
func (c *Catalog) ListGlobalPolicies(ctx context.Context, tenantID uuid.UUID, f store.PolicyFilter, p store.Page) ([]models.Policy, string, error) {
	rows, next, err := c.store.ListGlobalPolicies(ctx, tenantID, f, p)
	return rows, next, failure(err, "policy")
}

// ListServicePolicies lists the service and route policies of a service, newest first.
func (c *Catalog) ListServicePolicies(ctx context.Context, tenantID, serviceID uuid.UUID, f store.PolicyFilter, p store.Page) ([]models.Policy, string, error) {
	rows, next, err := c.store.ListServicePolicies(ctx, tenantID, serviceID, f, p)
	return rows, next, failure(err, "API service")
}

// policies: a change keeps the type, scope and route (they fix what the policy means and
// where it applies) and checks the rest as a create does.
func policies(c *Catalog) Resource[models.Policy, PolicyInput] {
	return Resource[models.Policy, PolicyInput]{
		kind: store.KindPolicy, what: "policy", c: c,
		get: c.store.GetPolicy, update: c.store.UpdatePolicy, remove: c.store.DeletePolicy,
		inputOf: PolicyInputOf,
		apply: func(p *models.Policy, in PolicyInput) error {
			cur := PolicyInputOf(*p)
			var v validation
			v.immutable("type", cur.Type, in.Type)
			v.immutable("scope", cur.Scope, in.Scope)
			v.immutable("route_id", cur.RouteID, in.RouteID)
			if v.Failed() {
				return v.Err()
			}
			next := in.check(&v)
			if err := v.Err(); err != nil {
				return err
			}
			p.Name, p.Description, p.Spec, p.Priority, p.Enabled = next.Name, next.Description, next.Spec, next.Priority, next.Enabled
			return nil
		},
	}
}
