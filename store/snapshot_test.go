package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/snapshot"
	"github.com/imprun/imprun-server/store"
)

var (
	operator = apitest.Persona{Email: "ops@example.com", Roles: []string{models.PlatformOperator}}
	owner    = apitest.Persona{Email: "owner@acme.test"}
)

// catalogPublish builds, through the provider REST API, a catalog that uses every field of the
// snapshot (routes with several paths, matches of every kind, weighted backends with timeouts,
// health checks, circuit breakers, retries, TLS and consistent hashing, policies of every type
// on all three scopes, one disabled), and returns a publish of it.
func catalogPublish(t *testing.T, env *apitest.Env) models.ProductPublish {
	t.Helper()
	var tenant models.Tenant
	r := env.As(operator).Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": owner.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	r.JSON(&tenant)
	c := env.As(owner)
	post := func(path string, body any) string {
		t.Helper()
		r := c.Post("/v1/provider"+path, body)
		require.Equal(t, http.StatusCreated, r.Status, "POST %s: %s", path, r.Body)
		return r.Map()["id"].(string)
	}

	payments := post("/api-services", map[string]any{"name": "payments", "version": "1.2.0"})
	ledger := post("/api-services", map[string]any{"name": "ledger", "version": "2.0.0"})
	svc := "/api-services/" + payments
	charges := post(svc+"/backends", map[string]any{"name": "charges", "scheme": "https",
		"endpoints":          []map[string]any{{"host": "charges.internal.example", "port": 443, "weight": 3, "zone": "eu-1a"}, {"host": "10.0.0.12", "port": 8443}},
		"lb_policy":          "ConsistentHash",
		"consistent_hash":    map[string]any{"type": "Cookie", "cookie": map[string]any{"name": "sticky", "ttl_seconds": 60}},
		"connect_timeout_ms": 250, "timeout_ms": 5000, "idle_timeout_ms": 60000,
		"health_check":    map[string]any{"type": "HTTP", "path": "/healthz", "interval_ms": 5000, "timeout_ms": 1000, "healthy_threshold": 2, "unhealthy_threshold": 3},
		"circuit_breaker": map[string]any{"max_connections": 100, "max_pending_requests": 10, "max_parallel_requests": 50, "max_parallel_retries": 3},
		"retry":           map[string]any{"num_retries": 2, "retry_on": []string{"5xx", "reset"}, "per_try_timeout_ms": 1500, "backoff": map[string]any{"base_interval_ms": 100, "max_interval_ms": 1000}},
		"tls":             map[string]any{"sni": "charges.example.com", "insecure_skip_verify": false},
	})
	canary := post(svc+"/backends", map[string]any{"name": "charges-canary", "scheme": "http",
		"endpoints": []map[string]any{{"host": "10.0.0.13", "port": 8080}}, "lb_policy": "ConsistentHash",
		"consistent_hash": map[string]any{"type": "Header", "header_name": "X-User"},
		"retry":           map[string]any{"num_retries": 1, "retry_on": []string{"connect-failure"}}})
	plain := post(svc+"/backends", map[string]any{"name": "plain", "scheme": "http", "endpoints": []map[string]any{{"host": "10.0.0.14", "port": 80}}})
	route := post(svc+"/routes", map[string]any{"name": "charges",
		"hostnames":    []string{"charges.example.com"},
		"paths":        []map[string]any{{"type": "prefix", "value": "/v1/charges"}, {"type": "exact", "value": "/v1/charge"}, {"type": "regex", "value": "^/v2/charges/[0-9]+$"}},
		"methods":      []string{"GET", "POST"},
		"headers":      []map[string]any{{"name": "X-Tenant", "type": "Exact", "value": "acme"}, {"name": "X-Trace", "type": "Present"}},
		"query_params": []map[string]any{{"name": "expand", "type": "RegularExpression", "value": "^(customer|refunds)$"}},
		"backend_refs": []map[string]any{{"backend_id": charges, "weight": 90}, {"backend_id": canary, "weight": 10}},
		"priority":     200,
		"timeouts":     map[string]any{"request_ms": 10000, "backend_request_ms": 4000},
	})
	post(svc+"/routes", map[string]any{"name": "health", "paths": []map[string]any{{"type": "exact", "value": "/health"}},
		"backend_refs": []map[string]any{{"backend_id": plain, "weight": 100}}})
	ledgerBackend := post("/api-services/"+ledger+"/backends", map[string]any{"name": "ledger", "scheme": "grpc", "endpoints": []map[string]any{{"host": "ledger.internal.example", "port": 9090}}})
	post("/api-services/"+ledger+"/routes", map[string]any{"name": "entries", "paths": []map[string]any{{"type": "prefix", "value": "/v1/ledger"}},
		"backend_refs": []map[string]any{{"backend_id": ledgerBackend, "weight": 100}}})

	post("/policies", map[string]any{"name": "cors", "type": "cors", "spec": map[string]any{"allow_origins": []string{"https://app.example.com"}, "allow_methods": []string{"GET"},
		"allow_headers": []string{"Authorization"}, "expose_headers": []string{"X-Request-Id"}, "max_age_seconds": 600, "allow_credentials": true}})
	post("/policies", map[string]any{"name": "global-rl", "type": "rate-limit", "spec": map[string]any{"requests_per_unit": 1000, "unit": "minute"}})
	post(svc+"/policies", map[string]any{"name": "svc-rl", "type": "rate-limit", "priority": 10, "spec": map[string]any{"requests_per_unit": 100, "unit": "second", "burst": 20}})
	post(svc+"/policies", map[string]any{"name": "svc-timeout", "type": "timeout", "spec": map[string]any{"request_ms": 8000, "backend_request_ms": 6000}})
	post(svc+"/policies", map[string]any{"name": "svc-headers", "type": "header-modifier", "spec": map[string]any{
		"request":  map[string]any{"add": []map[string]any{{"name": "X-Env", "value": "prod"}}, "set": []map[string]any{{"name": "X-Gateway", "value": "imprun"}}, "remove": []string{"X-Debug"}},
		"response": map[string]any{"set": []map[string]any{{"name": "X-Frame-Options", "value": "DENY"}}, "remove": []string{"Server"}}}})
	post(svc+"/policies", map[string]any{"name": "svc-retry-off", "type": "retry", "enabled": false, "spec": map[string]any{"num_retries": 5, "retry_on": []string{"5xx"}}})
	routePolicy := func(name, typ string, spec any) {
		post(svc+"/policies", map[string]any{"name": name, "type": typ, "scope": "route", "route_id": route, "spec": spec})
	}
	routePolicy("allow", "ip-allow", map[string]any{"cidrs": []string{"10.0.0.0/8", "192.168.1.7"}})
	routePolicy("deny", "ip-deny", map[string]any{"cidrs": []string{"10.66.0.0/16"}})
	routePolicy("retry", "retry", map[string]any{"num_retries": 3, "retry_on": []string{"gateway-error"}, "per_try_timeout_ms": 2000})
	routePolicy("rewrite", "url-rewrite", map[string]any{"hostname": "charges.internal.example", "path": map[string]any{"type": "prefix", "value": "/api"}})

	post("/certificates", map[string]any{"name": "payments-tls"})
	post("/certificates", map[string]any{"name": "spare-tls"})
	gateway := post("/gateways", map[string]any{"name": "public-gw", "gateway_class": "envoy-gateway", "listeners": []map[string]any{
		{"name": "http", "port": 80, "protocol": "HTTP"},
		{"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "payments.example.com",
			"tls": map[string]any{"mode": "Terminate", "certificate_refs": []map[string]any{{"name": "payments-tls"}, {"name": "spare-tls"}}}},
	}})
	product := post("/products", map[string]any{"name": "Payments", "version": "1.2.0", "api_services": []string{payments, ledger}})
	return models.ProductPublish{ID: uuid.New(), TenantID: tenant.ID, ProductID: uuid.MustParse(product), GatewayID: uuid.MustParse(gateway),
		ClusterID: uuid.New(), Environment: "prod", Hostname: "payments.example.com", AuthMode: "api-key",
		AuthConfig: models.JSONMap{"header": "X-Api-Key"}, APIServiceIDs: models.UUIDArray{uuid.MustParse(payments), uuid.MustParse(ledger)}}
}

// TestSnapshotSharedShape holds the server and the agent to one snapshot shape: what
// BuildSnapshot makes from a real catalog decodes strictly into package snapshot's types (no
// field the shared definition lacks) and encodes back to the very same bytes (no field, order
// or omitempty of its own), so agents that decode with package snapshot see everything and a
// checksum never depends on who encoded.
func TestSnapshotSharedShape(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{})
	p := catalogPublish(t, env)

	built, err := env.DB.Store().BuildSnapshot(context.Background(), p, store.SnapshotSource{})
	require.NoError(t, err)
	require.Equal(t, store.Checksum(built.Bytes), built.Checksum)

	dec := json.NewDecoder(bytes.NewReader(built.Bytes))
	dec.DisallowUnknownFields()
	var s snapshot.Snapshot
	require.NoError(t, dec.Decode(&s), "the server sends a field package snapshot does not define: %s", built.Bytes)
	again, err := json.Marshal(s)
	require.NoError(t, err)
	require.Equal(t, string(built.Bytes), string(again), "package snapshot encodes differently from what the server built")

	// Every policy spec the server wrote decodes strictly into the spec type agents read.
	for _, svc := range s.APIServices {
		for _, r := range svc.Routes {
			for _, pol := range r.Policies {
				spec := policySpec(t, pol.Type)
				dec := json.NewDecoder(bytes.NewReader(pol.Spec))
				dec.DisallowUnknownFields()
				require.NoError(t, dec.Decode(spec), "policy %s (%s): the spec has a field package snapshot does not define: %s", pol.Name, pol.Type, pol.Spec)
			}
		}
	}

	// The catalog reaches every corner of the shape (else the round trip proves little).
	require.Len(t, s.APIServices, 2)
	pay := s.APIServices[1]
	require.Equal(t, "payments", pay.Name)
	require.Len(t, pay.Routes, 4, "charges has three paths, health one")
	require.Equal(t, []string{"charges", "charges-2", "charges-3", "health"}, []string{pay.Routes[0].Name, pay.Routes[1].Name, pay.Routes[2].Name, pay.Routes[3].Name})
	require.NotNil(t, pay.Backends[0].ConsistentHash.Cookie)
	require.NotNil(t, pay.Backends[0].HealthCheck)
	require.NotNil(t, pay.Backends[0].CircuitBreaker)
	require.NotNil(t, pay.Backends[0].Retry.Backoff)
	require.NotNil(t, pay.Backends[0].TLS)
	require.Nil(t, pay.Backends[2].ConsistentHash, "omitted when unset")
	require.Equal(t, "payments-tls", s.Gateway.Listeners[1].TLS.CertificateRef)
	require.Nil(t, s.Gateway.Listeners[0].TLS)
	types := map[string]string{}
	for _, pol := range pay.Routes[0].Policies {
		types[pol.Type] = pol.Scope
	}
	require.Equal(t, map[string]string{"cors": "global", "rate-limit": "service", "timeout": "service", "header-modifier": "service",
		"ip-allow": "route", "ip-deny": "route", "retry": "route", "url-rewrite": "route"}, types)
	// The services' catalogs are read together: nothing of payments reaches ledger.
	led := s.APIServices[0]
	require.Equal(t, "ledger", led.Name)
	require.Len(t, led.Routes, 1)
	require.Len(t, led.Backends, 1)
	require.Equal(t, "ledger", led.Backends[0].Name)
	types = map[string]string{}
	for _, pol := range led.Routes[0].Policies {
		types[pol.Name] = pol.Scope
	}
	require.Equal(t, map[string]string{"cors": "global", "global-rl": "global"}, types)
	// Every row read is a use: 2 services, 4 backends, 3 routes, 2 global + 4 service + 4 route
	// policies, the product and the template.
	kinds := map[string]int{}
	for _, u := range built.Uses {
		kinds[u.Kind]++
	}
	require.Equal(t, map[string]int{"api_service": 2, "backend": 4, "route": 3, "policy": 10, "product": 1, "gateway": 1}, kinds)
}

// policySpec is the package snapshot type agents decode a policy type's spec into.
func policySpec(t *testing.T, policyType string) any {
	switch policyType {
	case "rate-limit":
		return &snapshot.RateLimitSpec{}
	case "cors":
		return &snapshot.CORSSpec{}
	case "header-modifier":
		return &snapshot.HeaderModifierSpec{}
	case "url-rewrite":
		return &snapshot.URLRewriteSpec{}
	case "retry":
		return &snapshot.Retry{}
	case "timeout":
		return &snapshot.TimeoutSpec{}
	case "ip-allow", "ip-deny":
		return &snapshot.IPListSpec{}
	}
	t.Fatalf("policy type %q has no spec type in package snapshot", policyType)
	return nil
}
