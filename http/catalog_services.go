package http

import (
	"errors"
	"fmt"
	nethttp "net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// ---- API services ----

// apiServiceBody is the writable part of an API service: the create body, and the document a
// PATCH merges into.
type apiServiceBody struct {
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	Description string            `json:"description"`
	Labels      map[string]string `json:"labels"`
	Status      string            `json:"status"`
}

func apiServiceBodyOf(s models.APIService) apiServiceBody {
	return apiServiceBody{Name: s.Name, Version: s.Version, Description: s.Description, Labels: s.Labels, Status: s.Status}
}

func (b *apiServiceBody) validate() error {
	var v validator
	v.check(serviceNameRe.MatchString(b.Name), "name", "2 to 100 letters, digits and dashes")
	v.check(len(b.Version) <= 50 && semverRe.MatchString(b.Version), "version", "a semantic version such as 1.2.0 (at most 50 characters)")
	v.text("description", b.Description, 0, 500)
	v.labels("labels", b.Labels)
	v.check(isOneOf(b.Status, models.ServiceActive, models.ServiceInactive), "status", "must be active or inactive")
	return v.err()
}

func (b apiServiceBody) applyTo(s *models.APIService) {
	s.Name, s.Version, s.Description, s.Labels, s.Status = b.Name, b.Version, b.Description, models.Labels(b.Labels), b.Status
	if s.Labels == nil {
		s.Labels = models.Labels{}
	}
}

func (a *API) createAPIService(c echo.Context) error {
	var body apiServiceBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	if body.Version == "" {
		body.Version = "1.0.0"
	}
	if body.Status == "" {
		body.Status = models.ServiceInactive
	}
	if err := body.validate(); err != nil {
		return err
	}
	s := models.APIService{TenantID: Tenant(c).ID}
	body.applyTo(&s)
	if err := a.store.CreateAPIService(c.Request().Context(), &s); err != nil {
		return catalogError(err, "API service")
	}
	Audit(c, AuditEntry{Action: "api_service.create", ResourceType: store.KindAPIService, ResourceID: s.ID.String(), ResourceName: s.Name,
		Summary: createdSummary(body, "version", "status")})
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
	rows, next, err := a.store.ListAPIServices(c.Request().Context(), Tenant(c).ID, store.APIServiceFilter{Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getAPIService(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	s, err := a.store.GetAPIService(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "API service")
	}
	return c.JSON(nethttp.StatusOK, s)
}

func (a *API) updateAPIService(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdateAPIService(ctx, tenantID, id, func(s *models.APIService) error {
		if err := a.guardUsage(ctx, tenantID, store.KindAPIService, id); err != nil {
			return err
		}
		var body apiServiceBody
		if err := applyPatch(apiServiceBodyOf(*s), patch, &body); err != nil {
			return err
		}
		if err := body.validate(); err != nil {
			return err
		}
		body.applyTo(s)
		return nil
	})
	if err != nil {
		return catalogError(err, "API service")
	}
	Audit(c, AuditEntry{Action: "api_service.update", ResourceType: store.KindAPIService, ResourceID: id.String(), ResourceName: after.Name,
		Summary: changeSummary(apiServiceBodyOf(before), apiServiceBodyOf(after))})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteAPIService(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	s, err := a.store.DeleteAPIService(ctx, tenantID, id, func(models.APIService) error {
		return a.guardUsage(ctx, tenantID, store.KindAPIService, id)
	})
	if err != nil {
		return catalogError(err, "API service")
	}
	Audit(c, AuditEntry{Action: "api_service.delete", ResourceType: store.KindAPIService, ResourceID: id.String(), ResourceName: s.Name,
		Summary: map[string]any{"version": s.Version, "cascade": "routes, backends and policies of the service"}})
	return c.NoContent(nethttp.StatusNoContent)
}

// ---- routes ----

type backendRefBody struct {
	BackendID string `json:"backend_id"`
	Weight    *int   `json:"weight"`
}

type routeBody struct {
	Name        string                   `json:"name"`
	Description string                   `json:"description"`
	Hostnames   []string                 `json:"hostnames"`
	Paths       []models.PathMatch       `json:"paths"`
	Methods     []string                 `json:"methods"`
	Headers     []models.HeaderMatch     `json:"headers"`
	QueryParams []models.QueryParamMatch `json:"query_params"`
	BackendRefs []backendRefBody         `json:"backend_refs"`
	Priority    *int                     `json:"priority"`
	Tags        []string                 `json:"tags"`
	Timeouts    *models.RouteTimeouts    `json:"timeouts"`
	Status      string                   `json:"status"`
}

func routeBodyOf(r models.Route) routeBody {
	refs := make([]backendRefBody, len(r.BackendRefs.V))
	for i, ref := range r.BackendRefs.V {
		w := ref.Weight
		refs[i] = backendRefBody{BackendID: ref.BackendID.String(), Weight: &w}
	}
	prio, timeouts := r.Priority, r.Timeouts
	return routeBody{Name: r.Name, Description: r.Description, Hostnames: r.Hostnames, Paths: r.Paths.V, Methods: r.Methods,
		Headers: r.Headers.V, QueryParams: r.QueryParams.V, BackendRefs: refs, Priority: &prio, Tags: r.Tags,
		Timeouts: &timeouts, Status: r.Status}
}

// validate checks a route and returns it as a row (without ids). Backends belonging to the
// route's service is checked by the store, in the transaction that saves the route.
func (b *routeBody) validate() (models.Route, error) {
	var v validator
	v.check(k8sNameRe.MatchString(b.Name), "name", "an RFC 1123 label: 1-63 lower-case letters, digits and dashes")
	v.text("description", b.Description, 0, 500)

	v.check(len(b.Hostnames) <= maxListItems, "hostnames", fmt.Sprintf("at most %d", maxListItems))
	seen := map[string]bool{}
	for i, h := range b.Hostnames {
		v.gatewayHostname(fieldAt("hostnames", i), h)
		v.check(!seen[h], fieldAt("hostnames", i), "duplicate")
		seen[h] = true
	}

	v.check(len(b.Paths) >= 1 && len(b.Paths) <= maxListItems, "paths", fmt.Sprintf("at least one path match (prefix, exact or regex), at most %d", maxListItems))
	for i, p := range b.Paths {
		f := fieldAt("paths", i)
		switch p.Type {
		case models.PathPrefix, models.PathExact:
			v.check(strings.HasPrefix(p.Value, "/") && len(p.Value) <= 1024 && !strings.ContainsAny(p.Value, " ?#"), f+".value", "must start with / (no spaces, ? or #; at most 1024 characters)")
		case models.PathRegex:
			v.check(p.Value != "" && len(p.Value) <= 1024, f+".value", "a regular expression of 1 to 1024 characters")
			v.regex(f+".value", p.Value)
		default:
			v.add(f+".type", "must be prefix, exact or regex")
		}
	}

	seen = map[string]bool{}
	for i, m := range b.Methods {
		v.check(isOneOf(m, httpMethods...), fieldAt("methods", i), "must be one of "+strings.Join(httpMethods, ", "))
		v.check(!seen[m], fieldAt("methods", i), "duplicate")
		seen[m] = true
	}
	v.check(len(b.Headers) <= maxListItems, "headers", fmt.Sprintf("at most %d", maxListItems))
	for i, h := range b.Headers {
		f := fieldAt("headers", i)
		v.check(headerNameRe.MatchString(h.Name), f+".name", "must be an HTTP header name")
		switch h.Type {
		case models.MatchExact:
			v.check(len(h.Value) <= 4096, f+".value", "at most 4096 characters")
		case models.MatchRegex:
			v.check(h.Value != "", f+".value", "required")
			v.regex(f+".value", h.Value)
		case models.MatchPresent:
			v.check(h.Value == "", f+".value", "must be empty for a Present match")
		default:
			v.add(f+".type", "must be Exact, RegularExpression or Present")
		}
	}
	v.check(len(b.QueryParams) <= maxListItems, "query_params", fmt.Sprintf("at most %d", maxListItems))
	for i, q := range b.QueryParams {
		f := fieldAt("query_params", i)
		v.check(q.Name != "" && len(q.Name) <= 256, f+".name", "1 to 256 characters")
		switch q.Type {
		case models.MatchExact:
			v.check(len(q.Value) <= 4096, f+".value", "at most 4096 characters")
		case models.MatchRegex:
			v.check(q.Value != "", f+".value", "required")
			v.regex(f+".value", q.Value)
		default:
			v.add(f+".type", "must be Exact or RegularExpression")
		}
	}

	refs := make([]models.BackendRef, 0, len(b.BackendRefs))
	v.check(len(b.BackendRefs) >= 1 && len(b.BackendRefs) <= 16, "backend_refs", "1 to 16 backends of this service")
	sum, sumKnown := 0, true
	ids := map[uuid.UUID]bool{}
	for i, r := range b.BackendRefs {
		f := fieldAt("backend_refs", i)
		id, err := uuid.Parse(r.BackendID)
		switch {
		case err != nil:
			v.add(f+".backend_id", "must be a UUID")
		case ids[id]:
			v.add(f+".backend_id", "duplicate")
		}
		ids[id] = true
		w := 100 // a single backend takes all the traffic unless told otherwise
		switch {
		case r.Weight != nil:
			w = *r.Weight
			v.check(w >= 0 && w <= 100, f+".weight", "must be from 0 to 100")
		case len(b.BackendRefs) > 1:
			v.add(f+".weight", "required when a route has several backends")
			sumKnown = false
		}
		sum += w
		refs = append(refs, models.BackendRef{BackendID: id, Weight: w})
	}
	if len(b.BackendRefs) > 0 && sumKnown {
		v.check(sum == 100, "backend_refs", fmt.Sprintf("the weights must sum to 100 (they sum to %d)", sum))
	}

	prio := 100
	if b.Priority != nil {
		prio = *b.Priority
	}
	v.priority("priority", prio)
	validateTags(&v, b.Tags)
	var timeouts models.RouteTimeouts
	if b.Timeouts != nil {
		timeouts = *b.Timeouts
	}
	v.timeout("timeouts.request_ms", timeouts.RequestMS)
	v.timeout("timeouts.backend_request_ms", timeouts.BackendRequestMS)
	if timeouts.RequestMS != nil && timeouts.BackendRequestMS != nil {
		v.check(*timeouts.BackendRequestMS <= *timeouts.RequestMS, "timeouts.backend_request_ms", "must not exceed timeouts.request_ms")
	}
	v.check(isOneOf(b.Status, models.RouteActive, models.RouteInactive, models.RouteDraft), "status", "must be active, inactive or draft")
	if err := v.err(); err != nil {
		return models.Route{}, err
	}
	return models.Route{
		Name: b.Name, Description: b.Description, Hostnames: orEmpty(b.Hostnames), Paths: models.JSON[[]models.PathMatch]{V: b.Paths},
		Methods: orEmpty(b.Methods), Headers: models.JSON[[]models.HeaderMatch]{V: orEmpty(b.Headers)},
		QueryParams: models.JSON[[]models.QueryParamMatch]{V: orEmpty(b.QueryParams)}, BackendRefs: models.JSON[[]models.BackendRef]{V: refs},
		Priority: prio, Tags: orEmpty(b.Tags), Timeouts: timeouts, Status: b.Status,
	}, nil
}

func validateTags(v *validator, tags []string) {
	v.check(len(tags) <= 20, "tags", "at most 20")
	seen := map[string]bool{}
	for i, t := range tags {
		v.check(t != "" && len(t) <= 63 && !strings.ContainsAny(t, " \t\r\n"), fieldAt("tags", i), "1 to 63 characters without spaces")
		v.check(!seen[t], fieldAt("tags", i), "duplicate")
		seen[t] = true
	}
}

func (a *API) createRoute(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var body routeBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	if body.Status == "" {
		body.Status = models.RouteActive
	}
	r, err := body.validate()
	if err != nil {
		return err
	}
	r.TenantID, r.APIServiceID = Tenant(c).ID, serviceID
	if err := a.store.CreateRoute(c.Request().Context(), &r); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return NotFound("API service")
		}
		return catalogError(err, "route")
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
	rows, next, err := a.store.ListRoutes(c.Request().Context(), Tenant(c).ID, serviceID, store.StatusFilter{Status: st}, p)
	if err != nil {
		return catalogError(err, "API service")
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getRoute(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	r, err := a.store.GetRoute(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "route")
	}
	return c.JSON(nethttp.StatusOK, r)
}

func (a *API) updateRoute(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdateRoute(ctx, tenantID, id, func(r *models.Route) error {
		if err := a.guardUsage(ctx, tenantID, store.KindRoute, id); err != nil {
			return err
		}
		var body routeBody
		if err := applyPatch(routeBodyOf(*r), patch, &body); err != nil {
			return err
		}
		next, err := body.validate()
		if err != nil {
			return err
		}
		next.ID, next.TenantID, next.APIServiceID, next.CreatedAt = r.ID, r.TenantID, r.APIServiceID, r.CreatedAt
		*r = next
		return nil
	})
	if err != nil {
		return catalogError(err, "route")
	}
	Audit(c, AuditEntry{Action: "route.update", ResourceType: store.KindRoute, ResourceID: id.String(), ResourceName: after.Name,
		Summary: changeSummary(routeBodyOf(before), routeBodyOf(after))})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteRoute(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	r, err := a.store.DeleteRoute(ctx, tenantID, id, func(models.Route) error {
		return a.guardUsage(ctx, tenantID, store.KindRoute, id)
	})
	if err != nil {
		return catalogError(err, "route")
	}
	Audit(c, AuditEntry{Action: "route.delete", ResourceType: store.KindRoute, ResourceID: id.String(), ResourceName: r.Name,
		Summary: map[string]any{"api_service_id": r.APIServiceID.String()}})
	return c.NoContent(nethttp.StatusNoContent)
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
	rc, err := a.store.LoadRouteConfig(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "route")
	}
	return c.JSON(nethttp.StatusOK, effectivePoliciesResponse{RouteID: rc.Route.ID, APIServiceID: rc.Service.ID, Items: rc.EffectivePolicies()})
}

// ---- backends ----

type backendBody struct {
	Name             string                   `json:"name"`
	Description      string                   `json:"description"`
	Scheme           string                   `json:"scheme"`
	Endpoints        []models.BackendEndpoint `json:"endpoints"`
	LBPolicy         string                   `json:"lb_policy"`
	ConsistentHash   *models.ConsistentHash   `json:"consistent_hash"`
	ConnectTimeoutMS *int                     `json:"connect_timeout_ms"`
	TimeoutMS        *int                     `json:"timeout_ms"`
	IdleTimeoutMS    *int                     `json:"idle_timeout_ms"`
	HealthCheck      *models.HealthCheck      `json:"health_check"`
	CircuitBreaker   *models.CircuitBreaker   `json:"circuit_breaker"`
	Retry            *models.BackendRetry     `json:"retry"`
	TLS              *models.BackendTLS       `json:"tls"`
	Status           string                   `json:"status"`
}

func backendBodyOf(b models.Backend) backendBody {
	return backendBody{Name: b.Name, Description: b.Description, Scheme: b.Scheme, Endpoints: b.Endpoints.V, LBPolicy: b.LBPolicy,
		ConsistentHash: b.ConsistentHash.V, ConnectTimeoutMS: b.ConnectTimeoutMS, TimeoutMS: b.TimeoutMS, IdleTimeoutMS: b.IdleTimeoutMS,
		HealthCheck: b.HealthCheck.V, CircuitBreaker: b.CircuitBreaker.V, Retry: b.Retry.V, TLS: b.TLS.V, Status: b.Status}
}

// withDefaults fills what a backend may leave out.
func (b *backendBody) withDefaults() {
	if b.Scheme == "" {
		b.Scheme = models.SchemeHTTP
	}
	if b.LBPolicy == "" {
		b.LBPolicy = models.LBRoundRobin
	}
	if b.Status == "" {
		b.Status = models.BackendActive
	}
	for i := range b.Endpoints {
		if b.Endpoints[i].Weight == 0 {
			b.Endpoints[i].Weight = 1
		}
	}
	if hc := b.HealthCheck; hc != nil {
		if hc.IntervalMS == 0 {
			hc.IntervalMS = 10_000
		}
		if hc.TimeoutMS == 0 {
			hc.TimeoutMS = 5_000
		}
		if hc.HealthyThreshold == 0 {
			hc.HealthyThreshold = 2
		}
		if hc.UnhealthyThreshold == 0 {
			hc.UnhealthyThreshold = 3
		}
	}
}

func (b *backendBody) validate() (models.Backend, error) {
	b.withDefaults()
	var v validator
	v.check(k8sNameRe.MatchString(b.Name), "name", "an RFC 1123 label: 1-63 lower-case letters, digits and dashes")
	v.text("description", b.Description, 0, 500)
	v.check(isOneOf(b.Scheme, models.SchemeHTTP, models.SchemeHTTPS, models.SchemeGRPC, models.SchemeGRPCS), "scheme", "must be http, https, grpc or grpcs")

	v.check(len(b.Endpoints) >= 1 && len(b.Endpoints) <= maxListItems, "endpoints", fmt.Sprintf("1 to %d endpoints", maxListItems))
	seen := map[string]bool{}
	for i, e := range b.Endpoints {
		f := fieldAt("endpoints", i)
		v.upstreamHost(f+".host", e.Host)
		v.port(f+".port", e.Port)
		v.check(e.Weight >= 1 && e.Weight <= 128, f+".weight", "must be from 1 to 128")
		v.check(len(e.Zone) <= 63, f+".zone", "at most 63 characters")
		key := fmt.Sprintf("%s:%d", strings.ToLower(e.Host), e.Port)
		v.check(!seen[key], f, "duplicate endpoint "+key)
		seen[key] = true
	}

	v.check(isOneOf(b.LBPolicy, models.LBRoundRobin, models.LBLeastRequest, models.LBRandom, models.LBConsistentHash), "lb_policy",
		"must be RoundRobin, LeastRequest, Random or ConsistentHash")
	switch ch := b.ConsistentHash; {
	case b.LBPolicy == models.LBConsistentHash && ch == nil:
		v.add("consistent_hash", "required with lb_policy ConsistentHash")
	case b.LBPolicy != models.LBConsistentHash && ch != nil:
		v.add("consistent_hash", "only with lb_policy ConsistentHash")
	case ch != nil:
		switch ch.Type {
		case "SourceIP":
			v.check(ch.HeaderName == "" && ch.Cookie == nil, "consistent_hash", "a SourceIP hash takes no header_name or cookie")
		case "Header":
			v.check(headerNameRe.MatchString(ch.HeaderName), "consistent_hash.header_name", "an HTTP header name is required for a Header hash")
			v.check(ch.Cookie == nil, "consistent_hash.cookie", "only for a Cookie hash")
		case "Cookie":
			v.check(ch.Cookie != nil && headerNameRe.MatchString(ch.Cookie.Name), "consistent_hash.cookie.name", "a cookie name is required for a Cookie hash")
			v.check(ch.Cookie == nil || (ch.Cookie.TTLSeconds >= 0 && ch.Cookie.TTLSeconds <= 86400*365), "consistent_hash.cookie.ttl_seconds", "must be from 0 to 31536000")
			v.check(ch.HeaderName == "", "consistent_hash.header_name", "only for a Header hash")
		default:
			v.add("consistent_hash.type", "must be SourceIP, Header or Cookie")
		}
	}

	v.timeout("connect_timeout_ms", b.ConnectTimeoutMS)
	v.timeout("timeout_ms", b.TimeoutMS)
	v.timeout("idle_timeout_ms", b.IdleTimeoutMS)
	if b.ConnectTimeoutMS != nil && b.TimeoutMS != nil {
		v.check(*b.ConnectTimeoutMS <= *b.TimeoutMS, "connect_timeout_ms", "must not exceed timeout_ms")
	}

	if hc := b.HealthCheck; hc != nil {
		switch hc.Type {
		case "HTTP":
			v.check(strings.HasPrefix(hc.Path, "/") && len(hc.Path) <= 1024, "health_check.path", "an HTTP health check needs a path starting with /")
		case "TCP", "GRPC":
			v.check(hc.Path == "", "health_check.path", "only for an HTTP health check")
		default:
			v.add("health_check.type", "must be HTTP, TCP or GRPC")
		}
		v.check(hc.IntervalMS >= 1000 && hc.IntervalMS <= 300_000, "health_check.interval_ms", "must be from 1000 to 300000")
		v.check(hc.TimeoutMS >= 100 && hc.TimeoutMS <= hc.IntervalMS, "health_check.timeout_ms", "must be from 100 to interval_ms")
		v.check(hc.HealthyThreshold >= 1 && hc.HealthyThreshold <= 10, "health_check.healthy_threshold", "must be from 1 to 10")
		v.check(hc.UnhealthyThreshold >= 1 && hc.UnhealthyThreshold <= 10, "health_check.unhealthy_threshold", "must be from 1 to 10")
	}
	if cb := b.CircuitBreaker; cb != nil {
		for _, f := range []struct {
			name string
			n    int
		}{{"max_connections", cb.MaxConnections}, {"max_pending_requests", cb.MaxPendingRequests},
			{"max_parallel_requests", cb.MaxParallelRequests}, {"max_parallel_retries", cb.MaxParallelRetries}} {
			v.check(f.n >= 0 && f.n <= 1_000_000, "circuit_breaker."+f.name, "must be from 0 (the proxy default) to 1000000")
		}
	}
	if r := b.Retry; r != nil {
		v.check(r.NumRetries >= 1 && r.NumRetries <= 10, "retry.num_retries", "must be from 1 to 10")
		validateRetryOn(&v, "retry.retry_on", r.RetryOn)
		v.check(r.PerTryTimeoutMS >= 0 && r.PerTryTimeoutMS <= maxTimeoutMS, "retry.per_try_timeout_ms", fmt.Sprintf("must be from 0 (none) to %d", maxTimeoutMS))
		if b.TimeoutMS != nil {
			v.check(r.PerTryTimeoutMS <= *b.TimeoutMS, "retry.per_try_timeout_ms", "must not exceed timeout_ms")
		}
		if bo := r.Backoff; bo != nil {
			v.check(bo.BaseIntervalMS >= 1 && bo.BaseIntervalMS <= 60_000, "retry.backoff.base_interval_ms", "must be from 1 to 60000")
			v.check(bo.MaxIntervalMS >= bo.BaseIntervalMS && bo.MaxIntervalMS <= 300_000, "retry.backoff.max_interval_ms", "must be from base_interval_ms to 300000")
		}
	}
	if t := b.TLS; t != nil {
		v.check(b.Scheme == models.SchemeHTTPS || b.Scheme == models.SchemeGRPCS, "tls", "upstream TLS needs scheme https or grpcs")
		v.check(t.SNI == "" || (len(t.SNI) <= 253 && dnsNameRe.MatchString(t.SNI)), "tls.sni", "must be a host name")
	}
	v.check(isOneOf(b.Status, models.BackendActive, models.BackendInactive), "status", "must be active or inactive")
	if err := v.err(); err != nil {
		return models.Backend{}, err
	}
	return models.Backend{
		Name: b.Name, Description: b.Description, Scheme: b.Scheme, Endpoints: models.JSON[[]models.BackendEndpoint]{V: b.Endpoints},
		LBPolicy: b.LBPolicy, ConsistentHash: models.JSON[*models.ConsistentHash]{V: b.ConsistentHash},
		ConnectTimeoutMS: b.ConnectTimeoutMS, TimeoutMS: b.TimeoutMS, IdleTimeoutMS: b.IdleTimeoutMS,
		HealthCheck: models.JSON[*models.HealthCheck]{V: b.HealthCheck}, CircuitBreaker: models.JSON[*models.CircuitBreaker]{V: b.CircuitBreaker},
		Retry: models.JSON[*models.BackendRetry]{V: b.Retry}, TLS: models.JSON[*models.BackendTLS]{V: b.TLS}, Status: b.Status,
	}, nil
}

func (a *API) createBackend(c echo.Context) error {
	serviceID, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var body backendBody
	if err := bindBody(c, &body); err != nil {
		return err
	}
	b, err := body.validate()
	if err != nil {
		return err
	}
	b.TenantID, b.APIServiceID = Tenant(c).ID, serviceID
	if err := a.store.CreateBackend(c.Request().Context(), &b); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return NotFound("API service")
		}
		return catalogError(err, "backend")
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
	rows, next, err := a.store.ListBackends(c.Request().Context(), Tenant(c).ID, serviceID, store.StatusFilter{Status: st}, p)
	if err != nil {
		return catalogError(err, "API service")
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getBackend(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	b, err := a.store.GetBackend(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return catalogError(err, "backend")
	}
	return c.JSON(nethttp.StatusOK, b)
}

func (a *API) updateBackend(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	patch, err := readPatch(c)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	before, after, err := a.store.UpdateBackend(ctx, tenantID, id, func(b *models.Backend) error {
		if err := a.guardUsage(ctx, tenantID, store.KindBackend, id); err != nil {
			return err
		}
		var body backendBody
		if err := applyPatch(backendBodyOf(*b), patch, &body); err != nil {
			return err
		}
		next, err := body.validate()
		if err != nil {
			return err
		}
		next.ID, next.TenantID, next.APIServiceID, next.CreatedAt = b.ID, b.TenantID, b.APIServiceID, b.CreatedAt
		*b = next
		return nil
	})
	if err != nil {
		return catalogError(err, "backend")
	}
	Audit(c, AuditEntry{Action: "backend.update", ResourceType: store.KindBackend, ResourceID: id.String(), ResourceName: after.Name,
		Summary: changeSummary(backendBodyOf(before), backendBodyOf(after))})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteBackend(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request().Context(), Tenant(c).ID
	b, err := a.store.DeleteBackend(ctx, tenantID, id, func(models.Backend) error {
		return a.guardUsage(ctx, tenantID, store.KindBackend, id)
	})
	if err != nil {
		return catalogError(err, "backend")
	}
	Audit(c, AuditEntry{Action: "backend.delete", ResourceType: store.KindBackend, ResourceID: id.String(), ResourceName: b.Name,
		Summary: map[string]any{"api_service_id": b.APIServiceID.String()}})
	return c.NoContent(nethttp.StatusNoContent)
}
