package catalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// BackendRefInput is one backend a route sends traffic to, with its share.
type BackendRefInput struct {
	BackendID string `json:"backend_id"`
	Weight    *int   `json:"weight"`
}

// RouteInput is the writable part of a route.
type RouteInput struct {
	Name        string                   `json:"name"`
	Description string                   `json:"description"`
	Hostnames   []string                 `json:"hostnames"`
	Paths       []models.PathMatch       `json:"paths"`
	Methods     []string                 `json:"methods"`
	Headers     []models.HeaderMatch     `json:"headers"`
	QueryParams []models.QueryParamMatch `json:"query_params"`
	BackendRefs []BackendRefInput        `json:"backend_refs"`
	Priority    *int                     `json:"priority"`
	Tags        []string                 `json:"tags"`
	Timeouts    *models.RouteTimeouts    `json:"timeouts"`
	Status      string                   `json:"status"`
}

// RouteInputOf returns the writable fields of a route.
func RouteInputOf(r models.Route) RouteInput {
	refs := make([]BackendRefInput, len(r.BackendRefs.V))
	for i, ref := range r.BackendRefs.V {
		w := ref.Weight
		refs[i] = BackendRefInput{BackendID: ref.BackendID.String(), Weight: &w}
	}
	prio, timeouts := r.Priority, r.Timeouts
	return RouteInput{Name: r.Name, Description: r.Description, Hostnames: r.Hostnames, Paths: r.Paths.V, Methods: r.Methods,
		Headers: r.Headers.V, QueryParams: r.QueryParams.V, BackendRefs: refs, Priority: &prio, Tags: r.Tags,
		Timeouts: &timeouts, Status: r.Status}
}

// Validate checks a route and returns it as a row (without ids). That the backends belong to
// the route's service is checked by the store, in the transaction that saves the route.
func (in *RouteInput) Validate() (models.Route, error) {
	var v validation
	v.labelName("name", in.Name)
	v.text("description", in.Description, 0, 500)
	v.routeHostnames(in.Hostnames)
	v.routePaths(in.Paths)
	v.routeMethods(in.Methods)
	v.headerMatches(in.Headers)
	v.queryMatches(in.QueryParams)
	refs := v.backendRefs(in.BackendRefs)
	prio := 100
	if in.Priority != nil {
		prio = *in.Priority
	}
	v.priority("priority", prio)
	v.tags(in.Tags)
	var timeouts models.RouteTimeouts
	if in.Timeouts != nil {
		timeouts = *in.Timeouts
	}
	v.timeout("timeouts.request_ms", timeouts.RequestMS)
	v.timeout("timeouts.backend_request_ms", timeouts.BackendRequestMS)
	if timeouts.RequestMS != nil && timeouts.BackendRequestMS != nil {
		v.Check(*timeouts.BackendRequestMS <= *timeouts.RequestMS, "timeouts.backend_request_ms", "must not exceed timeouts.request_ms")
	}
	v.Check(isOneOf(in.Status, models.RouteActive, models.RouteInactive, models.RouteDraft), "status", "must be active, inactive or draft")
	if err := v.Err(); err != nil {
		return models.Route{}, err
	}
	return models.Route{
		Name: in.Name, Description: in.Description, Hostnames: orEmpty(in.Hostnames), Paths: models.JSON[[]models.PathMatch]{V: in.Paths},
		Methods: orEmpty(in.Methods), Headers: models.JSON[[]models.HeaderMatch]{V: orEmpty(in.Headers)},
		QueryParams: models.JSON[[]models.QueryParamMatch]{V: orEmpty(in.QueryParams)}, BackendRefs: models.JSON[[]models.BackendRef]{V: refs},
		Priority: prio, Tags: orEmpty(in.Tags), Timeouts: timeouts, Status: in.Status,
	}, nil
}

func (v *validation) routeHostnames(hosts []string) {
	v.Check(len(hosts) <= MaxListItems, "hostnames", fmt.Sprintf("at most %d", MaxListItems))
	seen := map[string]bool{}
	for i, h := range hosts {
		v.gatewayHostname(fieldAt("hostnames", i), h)
		v.Check(!seen[h], fieldAt("hostnames", i), "duplicate")
		seen[h] = true
	}
}

func (v *validation) routePaths(paths []models.PathMatch) {
	v.Check(len(paths) >= 1 && len(paths) <= MaxListItems, "paths", fmt.Sprintf("at least one path match (prefix, exact or regex), at most %d", MaxListItems))
	for i, p := range paths {
		f := fieldAt("paths", i)
		switch p.Type {
		case models.PathPrefix, models.PathExact:
			v.Check(strings.HasPrefix(p.Value, "/") && len(p.Value) <= 1024 && !strings.ContainsAny(p.Value, " ?#"), f+".value", "must start with / (no spaces, ? or #; at most 1024 characters)")
		case models.PathRegex:
			v.Check(p.Value != "" && len(p.Value) <= 1024, f+".value", "a regular expression of 1 to 1024 characters")
			v.regex(f+".value", p.Value)
		default:
			v.Add(f+".type", "must be prefix, exact or regex")
		}
	}
}

func (v *validation) routeMethods(methods []string) {
	seen := map[string]bool{}
	for i, m := range methods {
		v.Check(isOneOf(m, httpMethods...), fieldAt("methods", i), "must be one of "+strings.Join(httpMethods, ", "))
		v.Check(!seen[m], fieldAt("methods", i), "duplicate")
		seen[m] = true
	}
}

func (v *validation) headerMatches(headers []models.HeaderMatch) {
	v.Check(len(headers) <= MaxListItems, "headers", fmt.Sprintf("at most %d", MaxListItems))
	for i, h := range headers {
		f := fieldAt("headers", i)
		v.Check(headerNameRe.MatchString(h.Name), f+".name", "must be an HTTP header name")
		switch h.Type {
		case models.MatchExact:
			v.Check(len(h.Value) <= 4096, f+".value", "at most 4096 characters")
		case models.MatchRegex:
			v.Check(h.Value != "", f+".value", "required")
			v.regex(f+".value", h.Value)
		case models.MatchPresent:
			v.Check(h.Value == "", f+".value", "must be empty for a Present match")
		default:
			v.Add(f+".type", "must be Exact, RegularExpression or Present")
		}
	}
}

func (v *validation) queryMatches(params []models.QueryParamMatch) {
	v.Check(len(params) <= MaxListItems, "query_params", fmt.Sprintf("at most %d", MaxListItems))
	for i, q := range params {
		f := fieldAt("query_params", i)
		v.Check(q.Name != "" && len(q.Name) <= 256, f+".name", "1 to 256 characters")
		switch q.Type {
		case models.MatchExact:
			v.Check(len(q.Value) <= 4096, f+".value", "at most 4096 characters")
		case models.MatchRegex:
			v.Check(q.Value != "", f+".value", "required")
			v.regex(f+".value", q.Value)
		default:
			v.Add(f+".type", "must be Exact or RegularExpression")
		}
	}
}

// backendRefs checks a route's traffic split: 1 to 16 distinct backends whose weights sum to
// 100; a single backend takes all the traffic unless told otherwise.
func (v *validation) backendRefs(in []BackendRefInput) []models.BackendRef {
	refs := make([]models.BackendRef, 0, len(in))
	v.Check(len(in) >= 1 && len(in) <= 16, "backend_refs", "1 to 16 backends of this service")
	sum, sumKnown := 0, true
	ids := map[uuid.UUID]bool{}
	for i, r := range in {
		f := fieldAt("backend_refs", i)
		id, err := uuid.Parse(r.BackendID)
		switch {
		case err != nil:
			v.Add(f+".backend_id", "must be a UUID")
		case ids[id]:
			v.Add(f+".backend_id", "duplicate")
		}
		ids[id] = true
		w := 100
		switch {
		case r.Weight != nil:
			w = *r.Weight
			v.Check(w >= 0 && w <= 100, f+".weight", "must be from 0 to 100")
		case len(in) > 1:
			v.Add(f+".weight", "required when a route has several backends")
			sumKnown = false
		}
		sum += w
		refs = append(refs, models.BackendRef{BackendID: id, Weight: w})
	}
	if len(in) > 0 && sumKnown {
		v.Check(sum == 100, "backend_refs", fmt.Sprintf("the weights must sum to 100 (they sum to %d)", sum))
	}
	return refs
}

// CreateRoute creates a route of a service (active unless told otherwise). A service the
// tenant does not have is not found; backends outside the service fail their backend_refs field.
func (c *Catalog) CreateRoute(ctx context.Context, tenantID, serviceID uuid.UUID, in RouteInput) (models.Route, error) {
	if in.Status == "" {
		in.Status = models.RouteActive
	}
	r, err := in.Validate()
	if err != nil {
		return models.Route{}, err
	}
	r.TenantID, r.APIServiceID = tenantID, serviceID
	return r, createFailure(c.store.CreateRoute(ctx, &r), "API service", "route")
}

// ListRoutes lists the routes of a service, newest first.
func (c *Catalog) ListRoutes(ctx context.Context, tenantID, serviceID uuid.UUID, f store.StatusFilter, p store.Page) ([]models.Route, string, error) {
	rows, next, err := c.store.ListRoutes(ctx, tenantID, serviceID, f, p)
	return rows, next, failure(err, "API service")
}

// RouteConfig returns a route with its service, backends and the policies of its three scopes.
func (c *Catalog) RouteConfig(ctx context.Context, tenantID, routeID uuid.UUID) (store.RouteConfig, error) {
	rc, err := c.store.LoadRouteConfig(ctx, tenantID, routeID)
	return rc, failure(err, "route")
}

func routes(c *Catalog) Resource[models.Route, RouteInput] {
	return Resource[models.Route, RouteInput]{
		kind: store.KindRoute, what: "route", c: c,
		get: c.store.GetRoute, update: c.store.UpdateRoute, remove: c.store.DeleteRoute,
		inputOf: RouteInputOf,
		apply: validInto[models.Route, RouteInput](func(r *models.Route, next models.Route) {
			next.ID, next.TenantID, next.APIServiceID, next.CreatedAt = r.ID, r.TenantID, r.APIServiceID, r.CreatedAt
			*r = next
		}),
	}
}
