package catalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// BackendInput is the writable part of a backend.
type BackendInput struct {
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

// BackendInputOf returns the writable fields of a backend.
func BackendInputOf(b models.Backend) BackendInput {
	return BackendInput{Name: b.Name, Description: b.Description, Scheme: b.Scheme, Endpoints: b.Endpoints.V, LBPolicy: b.LBPolicy,
		ConsistentHash: b.ConsistentHash.V, ConnectTimeoutMS: b.ConnectTimeoutMS, TimeoutMS: b.TimeoutMS, IdleTimeoutMS: b.IdleTimeoutMS,
		HealthCheck: b.HealthCheck.V, CircuitBreaker: b.CircuitBreaker.V, Retry: b.Retry.V, TLS: b.TLS.V, Status: b.Status}
}

// withDefaults fills what a backend may leave out.
func (in *BackendInput) withDefaults() {
	if in.Scheme == "" {
		in.Scheme = models.SchemeHTTP
	}
	if in.LBPolicy == "" {
		in.LBPolicy = models.LBRoundRobin
	}
	if in.Status == "" {
		in.Status = models.BackendActive
	}
	for i := range in.Endpoints {
		if in.Endpoints[i].Weight == 0 {
			in.Endpoints[i].Weight = 1
		}
	}
	if hc := in.HealthCheck; hc != nil {
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

// Validate fills the defaults, checks the backend and returns it as a row (without ids).
func (in *BackendInput) Validate() (models.Backend, error) {
	in.withDefaults()
	var v validation
	v.labelName("name", in.Name)
	v.text("description", in.Description, 0, 500)
	v.Check(isOneOf(in.Scheme, models.SchemeHTTP, models.SchemeHTTPS, models.SchemeGRPC, models.SchemeGRPCS), "scheme", "must be http, https, grpc or grpcs")
	v.endpoints(in.Endpoints)
	v.loadBalancing(in.LBPolicy, in.ConsistentHash)
	v.timeout("connect_timeout_ms", in.ConnectTimeoutMS)
	v.timeout("timeout_ms", in.TimeoutMS)
	v.timeout("idle_timeout_ms", in.IdleTimeoutMS)
	if in.ConnectTimeoutMS != nil && in.TimeoutMS != nil {
		v.Check(*in.ConnectTimeoutMS <= *in.TimeoutMS, "connect_timeout_ms", "must not exceed timeout_ms")
	}
	v.healthCheck(in.HealthCheck)
	v.circuitBreaker(in.CircuitBreaker)
	v.backendRetry(in.Retry, in.TimeoutMS)
	if t := in.TLS; t != nil {
		v.Check(in.Scheme == models.SchemeHTTPS || in.Scheme == models.SchemeGRPCS, "tls", "upstream TLS needs scheme https or grpcs")
		v.Check(t.SNI == "" || (len(t.SNI) <= 253 && dnsNameRe.MatchString(t.SNI)), "tls.sni", "must be a host name")
	}
	v.Check(isOneOf(in.Status, models.BackendActive, models.BackendInactive), "status", "must be active or inactive")
	if err := v.Err(); err != nil {
		return models.Backend{}, err
	}
	return models.Backend{
		Name: in.Name, Description: in.Description, Scheme: in.Scheme, Endpoints: models.JSON[[]models.BackendEndpoint]{V: in.Endpoints},
		LBPolicy: in.LBPolicy, ConsistentHash: models.JSON[*models.ConsistentHash]{V: in.ConsistentHash},
		ConnectTimeoutMS: in.ConnectTimeoutMS, TimeoutMS: in.TimeoutMS, IdleTimeoutMS: in.IdleTimeoutMS,
		HealthCheck: models.JSON[*models.HealthCheck]{V: in.HealthCheck}, CircuitBreaker: models.JSON[*models.CircuitBreaker]{V: in.CircuitBreaker},
		Retry: models.JSON[*models.BackendRetry]{V: in.Retry}, TLS: models.JSON[*models.BackendTLS]{V: in.TLS}, Status: in.Status,
	}, nil
}

func (v *validation) endpoints(eps []models.BackendEndpoint) {
	v.Check(len(eps) >= 1 && len(eps) <= MaxListItems, "endpoints", fmt.Sprintf("1 to %d endpoints", MaxListItems))
	seen := map[string]bool{}
	for i, e := range eps {
		f := fieldAt("endpoints", i)
		v.upstreamHost(f+".host", e.Host)
		v.port(f+".port", e.Port)
		v.Check(e.Weight >= 1 && e.Weight <= 128, f+".weight", "must be from 1 to 128")
		v.Check(len(e.Zone) <= 63, f+".zone", "at most 63 characters")
		key := fmt.Sprintf("%s:%d", strings.ToLower(e.Host), e.Port)
		v.Check(!seen[key], f, "duplicate endpoint "+key)
		seen[key] = true
	}
}

// loadBalancing checks the policy and the hash a ConsistentHash policy (and only it) needs.
func (v *validation) loadBalancing(policy string, ch *models.ConsistentHash) {
	v.Check(isOneOf(policy, models.LBRoundRobin, models.LBLeastRequest, models.LBRandom, models.LBConsistentHash), "lb_policy",
		"must be RoundRobin, LeastRequest, Random or ConsistentHash")
	switch {
	case policy == models.LBConsistentHash && ch == nil:
		v.Add("consistent_hash", "required with lb_policy ConsistentHash")
	case policy != models.LBConsistentHash && ch != nil:
		v.Add("consistent_hash", "only with lb_policy ConsistentHash")
	case ch != nil:
		switch ch.Type {
		case "SourceIP":
			v.Check(ch.HeaderName == "" && ch.Cookie == nil, "consistent_hash", "a SourceIP hash takes no header_name or cookie")
		case "Header":
			v.Check(headerNameRe.MatchString(ch.HeaderName), "consistent_hash.header_name", "an HTTP header name is required for a Header hash")
			v.Check(ch.Cookie == nil, "consistent_hash.cookie", "only for a Cookie hash")
		case "Cookie":
			v.Check(ch.Cookie != nil && headerNameRe.MatchString(ch.Cookie.Name), "consistent_hash.cookie.name", "a cookie name is required for a Cookie hash")
			v.Check(ch.Cookie == nil || (ch.Cookie.TTLSeconds >= 0 && ch.Cookie.TTLSeconds <= 86400*365), "consistent_hash.cookie.ttl_seconds", "must be from 0 to 31536000")
			v.Check(ch.HeaderName == "", "consistent_hash.header_name", "only for a Header hash")
		default:
			v.Add("consistent_hash.type", "must be SourceIP, Header or Cookie")
		}
	}
}

func (v *validation) healthCheck(hc *models.HealthCheck) {
	if hc == nil {
		return
	}
	switch hc.Type {
	case "HTTP":
		v.Check(strings.HasPrefix(hc.Path, "/") && len(hc.Path) <= 1024, "health_check.path", "an HTTP health check needs a path starting with /")
	case "TCP", "GRPC":
		v.Check(hc.Path == "", "health_check.path", "only for an HTTP health check")
	default:
		v.Add("health_check.type", "must be HTTP, TCP or GRPC")
	}
	v.Check(hc.IntervalMS >= 1000 && hc.IntervalMS <= 300_000, "health_check.interval_ms", "must be from 1000 to 300000")
	v.Check(hc.TimeoutMS >= 100 && hc.TimeoutMS <= hc.IntervalMS, "health_check.timeout_ms", "must be from 100 to interval_ms")
	v.Check(hc.HealthyThreshold >= 1 && hc.HealthyThreshold <= 10, "health_check.healthy_threshold", "must be from 1 to 10")
	v.Check(hc.UnhealthyThreshold >= 1 && hc.UnhealthyThreshold <= 10, "health_check.unhealthy_threshold", "must be from 1 to 10")
}

func (v *validation) circuitBreaker(cb *models.CircuitBreaker) {
	if cb == nil {
		return
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"max_connections", cb.MaxConnections}, {"max_pending_requests", cb.MaxPendingRequests},
		{"max_parallel_requests", cb.MaxParallelRequests}, {"max_parallel_retries", cb.MaxParallelRetries}} {
		v.Check(f.n >= 0 && f.n <= 1_000_000, "circuit_breaker."+f.name, "must be from 0 (the proxy default) to 1000000")
	}
}

// backendRetry checks a backend's retries; a try may not outlast the whole request.
func (v *validation) backendRetry(r *models.BackendRetry, timeoutMS *int) {
	if r == nil {
		return
	}
	v.Check(r.NumRetries >= 1 && r.NumRetries <= 10, "retry.num_retries", "must be from 1 to 10")
	v.retryOn("retry.retry_on", r.RetryOn)
	v.Check(r.PerTryTimeoutMS >= 0 && r.PerTryTimeoutMS <= maxTimeoutMS, "retry.per_try_timeout_ms", fmt.Sprintf("must be from 0 (none) to %d", maxTimeoutMS))
	if timeoutMS != nil {
		v.Check(r.PerTryTimeoutMS <= *timeoutMS, "retry.per_try_timeout_ms", "must not exceed timeout_ms")
	}
	if bo := r.Backoff; bo != nil {
		v.Check(bo.BaseIntervalMS >= 1 && bo.BaseIntervalMS <= 60_000, "retry.backoff.base_interval_ms", "must be from 1 to 60000")
		v.Check(bo.MaxIntervalMS >= bo.BaseIntervalMS && bo.MaxIntervalMS <= 300_000, "retry.backoff.max_interval_ms", "must be from base_interval_ms to 300000")
	}
}

// CreateBackend creates a backend of a service; a service the tenant does not have is not found.
func (c *Catalog) CreateBackend(ctx context.Context, tenantID, serviceID uuid.UUID, in BackendInput) (models.Backend, error) {
	b, err := in.Validate()
	if err != nil {
		return models.Backend{}, err
	}
	b.TenantID, b.APIServiceID = tenantID, serviceID
	return b, createFailure(c.store.CreateBackend(ctx, &b), "API service", "backend")
}

// ListBackends lists the backends of a service, newest first.
func (c *Catalog) ListBackends(ctx context.Context, tenantID, serviceID uuid.UUID, f store.StatusFilter, p store.Page) ([]models.Backend, string, error) {
	rows, next, err := c.store.ListBackends(ctx, tenantID, serviceID, f, p)
	return rows, next, failure(err, "API service")
}

// backends: deleting a backend a route still sends traffic to is refused (referenced).
func backends(c *Catalog) Resource[models.Backend, BackendInput] {
	return Resource[models.Backend, BackendInput]{
		kind: store.KindBackend, what: "backend", c: c,
		get: c.store.GetBackend, update: c.store.UpdateBackend, remove: c.store.DeleteBackend,
		inputOf: BackendInputOf,
		apply: validInto[models.Backend, BackendInput](func(b *models.Backend, next models.Backend) {
			next.ID, next.TenantID, next.APIServiceID, next.CreatedAt = b.ID, b.TenantID, b.APIServiceID, b.CreatedAt
			*b = next
		}),
	}
}
