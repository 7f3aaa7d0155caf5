package http_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAPIServiceCRUD(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)

	r := dev.Post(prov+"/api-services", map[string]any{"name": "payments"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	svc := r.Map()
	require.Equal(t, "1.0.0", svc["version"], "default version")
	require.Equal(t, "inactive", svc["status"], "services start inactive")
	require.Equal(t, map[string]any{}, svc["labels"])
	id := idOf(svc)

	requireProblem(t, dev.Post(prov+"/api-services", map[string]any{"name": "payments"}), http.StatusConflict, "name_taken", "")

	r = w.env.As(viewerP).Get(prov + "/api-services/" + id)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "payments", r.Map()["name"])

	// PATCH merges: fields sent replace, labels (an object) merge, null clears.
	r = dev.Patch(prov+"/api-services/"+id, map[string]any{"status": "active", "labels": map[string]any{"team": "billing", "tier": "gold"}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "active", r.Map()["status"])
	r = dev.Patch(prov+"/api-services/"+id, map[string]any{"labels": map[string]any{"tier": nil}, "description": "Card payments"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	got := r.Map()
	require.Equal(t, map[string]any{"team": "billing"}, got["labels"])
	require.Equal(t, "Card payments", got["description"])
	require.Equal(t, "payments", got["name"], "fields not sent stay")
	requireProblem(t, dev.Patch(prov+"/api-services/"+id, map[string]any{"version": "one"}), 422, "validation_failed", "version")
	requireProblem(t, dev.Patch(prov+"/api-services/"+id, map[string]any{"colour": "red"}), 400, "unknown_field", "colour")

	for i := 0; i < 4; i++ {
		created(t, dev, prov+"/api-services", serviceBody(fmt.Sprintf("svc-%d", i)))
	}
	// Keyset pages: every service once, newest first.
	seen := map[string]bool{}
	path := prov + "/api-services?limit=2"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		r := dev.Get(path)
		require.Equal(t, http.StatusOK, r.Status)
		var page struct {
			Items      []map[string]any `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		r.JSON(&page)
		for _, it := range page.Items {
			require.False(t, seen[idOf(it)])
			seen[idOf(it)] = true
		}
		if page.NextCursor == nil {
			break
		}
		path = prov + "/api-services?limit=2&cursor=" + *page.NextCursor
	}
	require.Len(t, seen, 5)
	require.Equal(t, []string{"payments"}, names(listItems(t, dev, prov+"/api-services?status=active")))
	requireProblem(t, dev.Get(prov+"/api-services?status=deleted"), 400, "invalid_query", "status")

	require.Equal(t, http.StatusNoContent, dev.Delete(prov+"/api-services/"+id).Status)
	requireProblem(t, dev.Get(prov+"/api-services/"+id), 404, "not_found", "")
	requireProblem(t, dev.Delete(prov+"/api-services/"+id), 404, "not_found", "")

	// Every change is in the audit log with what changed.
	var actions []string
	for _, a := range auditActions(t, w, "api_service") {
		if a.ResourceID == id {
			actions = append(actions, a.Action)
			if a.Action == "api_service.update" && a.Summary["status"] != nil {
				require.Equal(t, map[string]any{"before": "inactive", "after": "active"}, a.Summary["status"])
				require.Equal(t, "changed", a.Summary["labels"])
			}
		}
	}
	require.Equal(t, []string{"api_service.create", "api_service.update", "api_service.update", "api_service.delete"}, actions)
}

func TestAPIServiceValidation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"name too short", map[string]any{"name": "a"}, "name"},
		{"name with space", map[string]any{"name": "my api"}, "name"},
		{"version not semver", map[string]any{"name": "ok", "version": "1.0"}, "version"},
		{"description too long", map[string]any{"name": "ok", "description": string(make([]byte, 501))}, "description"},
		{"bad label key", map[string]any{"name": "ok", "labels": map[string]any{"no spaces": "x"}}, "labels.no spaces"},
		{"bad status", map[string]any{"name": "ok", "status": "deleted"}, "status"},
	}
	for _, tc := range cases {
		requireProblem(t, dev.Post(prov+"/api-services", tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	require.EqualValues(t, 0, countRows(t, w.env, "api_services"))
}

func TestRouteAndBackendCRUD(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	svc := idOf(created(t, dev, prov+"/api-services", serviceBody("orders")))

	be1 := created(t, dev, prov+"/api-services/"+svc+"/backends", map[string]any{
		"name": "orders-v1", "scheme": "https",
		"endpoints":          []map[string]any{{"host": "orders-1.internal", "port": 8443}, {"host": "10.0.0.2", "port": 8443, "weight": 3, "zone": "a"}},
		"lb_policy":          "ConsistentHash",
		"consistent_hash":    map[string]any{"type": "Header", "header_name": "X-User"},
		"connect_timeout_ms": 500, "timeout_ms": 5000, "idle_timeout_ms": 60000,
		"health_check":    map[string]any{"type": "HTTP", "path": "/healthz"},
		"circuit_breaker": map[string]any{"max_connections": 100},
		"retry":           map[string]any{"num_retries": 2, "retry_on": []string{"5xx", "reset"}, "per_try_timeout_ms": 1000},
		"tls":             map[string]any{"sni": "orders.internal"},
	})
	require.Equal(t, "active", be1["status"])
	eps := be1["endpoints"].([]any)
	require.EqualValues(t, 1, eps[0].(map[string]any)["weight"], "endpoint weight defaults to 1")
	hc := be1["health_check"].(map[string]any)
	require.EqualValues(t, 10000, hc["interval_ms"], "health check defaults")
	require.EqualValues(t, 3, hc["unhealthy_threshold"])
	be2 := created(t, dev, prov+"/api-services/"+svc+"/backends", backendBody("orders-v2"))
	require.Nil(t, be2["tls"])
	require.Equal(t, "RoundRobin", be2["lb_policy"])
	requireProblem(t, dev.Post(prov+"/api-services/"+svc+"/backends", backendBody("orders-v2")), 409, "name_taken", "")

	rt := created(t, dev, prov+"/api-services/"+svc+"/routes", map[string]any{
		"name": "list-orders", "hostnames": []string{"api.example.com", "*.orders.example.com"},
		"paths":        []map[string]any{{"type": "prefix", "value": "/orders"}, {"type": "regex", "value": `^/orders/[0-9]+$`}},
		"methods":      []string{"GET", "HEAD"},
		"headers":      []map[string]any{{"name": "X-Env", "type": "Exact", "value": "prod"}, {"name": "X-Debug", "type": "Present"}},
		"query_params": []map[string]any{{"name": "v", "type": "RegularExpression", "value": "^[12]$"}},
		"backend_refs": []map[string]any{{"backend_id": idOf(be1), "weight": 90}, {"backend_id": idOf(be2), "weight": 10}},
		"timeouts":     map[string]any{"request_ms": 10000, "backend_request_ms": 8000},
		"tags":         []string{"public"},
	})
	require.Equal(t, "active", rt["status"])
	require.EqualValues(t, 100, rt["priority"], "default priority")
	require.Equal(t, svc, rt["api_service_id"])

	// A single backend takes all the traffic when no weight is given.
	solo := created(t, dev, prov+"/api-services/"+svc+"/routes", map[string]any{
		"name": "solo", "paths": []map[string]any{{"type": "exact", "value": "/solo"}},
		"backend_refs": []map[string]any{{"backend_id": idOf(be2)}}})
	require.EqualValues(t, 100, solo["backend_refs"].([]any)[0].(map[string]any)["weight"])

	require.ElementsMatch(t, []string{"list-orders", "solo"}, names(listItems(t, dev, prov+"/api-services/"+svc+"/routes")))
	require.ElementsMatch(t, []string{"orders-v1", "orders-v2"}, names(listItems(t, w.env.As(viewerP), prov+"/api-services/"+svc+"/backends")))
	require.Empty(t, listItems(t, dev, prov+"/api-services/"+svc+"/routes?status=draft"))

	// PATCH replaces arrays whole and re-checks the rules.
	r := dev.Patch(prov+"/routes/"+idOf(rt), map[string]any{"backend_refs": []map[string]any{{"backend_id": idOf(be1), "weight": 50}, {"backend_id": idOf(be2), "weight": 50}}, "status": "inactive"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "inactive", r.Map()["status"])
	require.Len(t, r.Map()["paths"], 2, "untouched arrays stay")
	requireProblem(t, dev.Patch(prov+"/routes/"+idOf(rt), map[string]any{"backend_refs": []map[string]any{{"backend_id": idOf(be1), "weight": 60}, {"backend_id": idOf(be2), "weight": 50}}}),
		422, "validation_failed", "backend_refs")
	require.EqualValues(t, 50, w.env.As(viewerP).Get(prov + "/routes/" + idOf(rt)).Map()["backend_refs"].([]any)[0].(map[string]any)["weight"], "a refused patch changes nothing")
	r = dev.Patch(prov+"/routes/"+idOf(rt), map[string]any{"timeouts": map[string]any{"backend_request_ms": nil}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Nil(t, r.Map()["timeouts"].(map[string]any)["backend_request_ms"], "null clears")

	r = dev.Patch(prov+"/backends/"+idOf(be1), map[string]any{"lb_policy": "LeastRequest", "consistent_hash": nil, "tls": nil, "scheme": "http"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Nil(t, r.Map()["consistent_hash"])
	requireProblem(t, dev.Patch(prov+"/backends/"+idOf(be1), map[string]any{"tls": map[string]any{"sni": "x.internal"}}), 422, "validation_failed", "tls")

	// A backend a route sends traffic to cannot go.
	r = dev.Delete(prov + "/backends/" + idOf(be2))
	requireProblem(t, r, 409, "referenced", "")
	require.Contains(t, r.Problem().Detail, "list-orders")
	require.Equal(t, http.StatusNoContent, dev.Delete(prov+"/routes/"+idOf(solo)).Status)
	require.Equal(t, http.StatusOK, dev.Patch(prov+"/routes/"+idOf(rt), map[string]any{"backend_refs": []map[string]any{{"backend_id": idOf(be1)}}}).Status)
	require.Equal(t, http.StatusNoContent, dev.Delete(prov+"/backends/"+idOf(be2)).Status)
	requireProblem(t, dev.Get(prov+"/backends/"+idOf(be2)), 404, "not_found", "")

	// Deleting the service takes its routes, backends and policies with it.
	pol := created(t, dev, prov+"/api-services/"+svc+"/policies", policyBody("rl", "rate-limit", map[string]any{"requests_per_unit": 10, "unit": "second"}))
	require.Equal(t, http.StatusNoContent, dev.Delete(prov+"/api-services/"+svc).Status)
	for _, p := range []string{"/routes/" + idOf(rt), "/backends/" + idOf(be1), "/policies/" + idOf(pol)} {
		requireProblem(t, dev.Get(prov+p), 404, "not_found", "", p)
	}
	requireProblem(t, dev.Get(prov+"/api-services/"+svc+"/routes"), 404, "not_found", "")

	var actions []string
	for _, a := range auditActions(t, w, "route") {
		actions = append(actions, a.Action)
	}
	require.Equal(t, []string{"route.create", "route.create", "route.update", "route.update", "route.delete", "route.update"}, actions)
}

func TestRouteValidation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	f := newServiceFixture(t, dev, "shop")
	be2 := idOf(created(t, dev, prov+"/api-services/"+f.service+"/backends", backendBody("shop-be2")))
	other := newServiceFixture(t, dev, "other") // its backend is not shop's

	base := func(mod func(m map[string]any)) map[string]any {
		m := routeBody("r1", f.backend, be2)
		mod(m)
		return m
	}
	refs := func(pairs ...any) []map[string]any {
		var out []map[string]any
		for i := 0; i < len(pairs); i += 2 {
			m := map[string]any{"backend_id": pairs[i]}
			if pairs[i+1] != nil {
				m["weight"] = pairs[i+1]
			}
			out = append(out, m)
		}
		return out
	}
	path := func(typ, v string) []map[string]any { return []map[string]any{{"type": typ, "value": v}} }
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"weights not summing to 100", base(func(m map[string]any) { m["backend_refs"] = refs(f.backend, 60, be2, 30) }), "backend_refs"},
		{"weight above 100", base(func(m map[string]any) { m["backend_refs"] = refs(f.backend, 101) }), "backend_refs[0].weight"},
		{"weight missing with two backends", base(func(m map[string]any) { m["backend_refs"] = refs(f.backend, 50, be2, nil) }), "backend_refs[1].weight"},
		{"backend of another service", base(func(m map[string]any) { m["backend_refs"] = refs(f.backend, 50, other.backend, 50) }), "backend_refs[1].backend_id"},
		{"backend that does not exist", base(func(m map[string]any) { m["backend_refs"] = refs("00000000-0000-0000-0000-000000000001", 100) }), "backend_refs[0].backend_id"},
		{"backend id not a uuid", base(func(m map[string]any) { m["backend_refs"] = refs("be-1", 100) }), "backend_refs[0].backend_id"},
		{"same backend twice", base(func(m map[string]any) { m["backend_refs"] = refs(f.backend, 50, f.backend, 50) }), "backend_refs[1].backend_id"},
		{"no backends", base(func(m map[string]any) { m["backend_refs"] = []any{} }), "backend_refs"},
		{"no path", base(func(m map[string]any) { m["paths"] = []any{} }), "paths"},
		{"invalid regex", base(func(m map[string]any) { m["paths"] = path("regex", "^/orders/(") }), "paths[0].value"},
		{"regex PCRE reads differently", base(func(m map[string]any) { m["paths"] = path("regex", `^/\x{263a}`) }), "paths[0].value"},
		{"regex with nested quantifiers", base(func(m map[string]any) { m["paths"] = path("regex", `^/(a+)+$`) }), "paths[0].value"},
		{"header regex with lookahead", base(func(m map[string]any) {
			m["headers"] = []map[string]any{{"name": "X-A", "type": "RegularExpression", "value": "(?=a)b"}}
		}), "headers[0].value"},
		{"header regex ReDoS", base(func(m map[string]any) {
			m["headers"] = []map[string]any{{"name": "X-A", "type": "RegularExpression", "value": "^(a|aa)*$"}}
		}), "headers[0].value"},
		{"prefix without slash", base(func(m map[string]any) { m["paths"] = path("prefix", "orders") }), "paths[0].value"},
		{"unknown path type", base(func(m map[string]any) { m["paths"] = path("glob", "/x*") }), "paths[0].type"},
		{"backend timeout above request timeout", base(func(m map[string]any) {
			m["timeouts"] = map[string]any{"request_ms": 1000, "backend_request_ms": 2000}
		}), "timeouts.backend_request_ms"},
		{"zero timeout", base(func(m map[string]any) { m["timeouts"] = map[string]any{"request_ms": 0} }), "timeouts.request_ms"},
		{"wildcard not leftmost", base(func(m map[string]any) { m["hostnames"] = []string{"api.*.example.com"} }), "hostnames[0]"},
		{"partial wildcard label", base(func(m map[string]any) { m["hostnames"] = []string{"*api.example.com"} }), "hostnames[0]"},
		{"upper-case hostname", base(func(m map[string]any) { m["hostnames"] = []string{"ok.example.com", "API.example.com"} }), "hostnames[1]"},
		{"ip as hostname", base(func(m map[string]any) { m["hostnames"] = []string{"10.0.0.1"} }), "hostnames[0]"},
		{"unknown method", base(func(m map[string]any) { m["methods"] = []string{"GET", "FETCH"} }), "methods[1]"},
		{"header regex invalid", base(func(m map[string]any) {
			m["headers"] = []map[string]any{{"name": "X-A", "type": "RegularExpression", "value": "[a-"}}
		}), "headers[0].value"},
		{"header name invalid", base(func(m map[string]any) {
			m["headers"] = []map[string]any{{"name": "X A", "type": "Exact", "value": "1"}}
		}), "headers[0].name"},
		{"present match with value", base(func(m map[string]any) {
			m["headers"] = []map[string]any{{"name": "X-A", "type": "Present", "value": "1"}}
		}), "headers[0].value"},
		{"query regex invalid", base(func(m map[string]any) {
			m["query_params"] = []map[string]any{{"name": "q", "type": "RegularExpression", "value": "(?P<"}}
		}), "query_params[0].value"},
		{"query Present not allowed", base(func(m map[string]any) {
			m["query_params"] = []map[string]any{{"name": "q", "type": "Present", "value": ""}}
		}), "query_params[0].type"},
		{"name not RFC 1123", base(func(m map[string]any) { m["name"] = "List_Orders" }), "name"},
		{"priority out of range", base(func(m map[string]any) { m["priority"] = 5000 }), "priority"},
		{"bad status", base(func(m map[string]any) { m["status"] = "live" }), "status"},
	}
	for _, tc := range cases {
		requireProblem(t, dev.Post(prov+"/api-services/"+f.service+"/routes", tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, dev.Post(prov+"/api-services/"+f.service+"/routes", routeBody("shop-rt", f.backend)), 409, "name_taken", "")
	requireProblem(t, dev.Post(prov+"/api-services/00000000-0000-0000-0000-000000000009/routes", routeBody("x", f.backend)), 404, "not_found", "")
	requireProblem(t, dev.Patch(prov+"/routes/"+f.route, map[string]any{"backend_refs": refs(other.backend, 100)}), 422, "validation_failed", "backend_refs[0].backend_id")
	require.EqualValues(t, 2, countRows(t, w.env, "routes"), "only the fixtures' routes exist")
}

func TestBackendValidation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	svc := idOf(created(t, dev, prov+"/api-services", serviceBody("inventory")))
	base := func(mod func(m map[string]any)) map[string]any {
		m := backendBody("be")
		mod(m)
		return m
	}
	ep := func(host string, port int) []map[string]any { return []map[string]any{{"host": host, "port": port}} }
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"port 0", base(func(m map[string]any) { m["endpoints"] = ep("10.0.0.1", 0) }), "endpoints[0].port"},
		{"port 65536", base(func(m map[string]any) { m["endpoints"] = ep("10.0.0.1", 65536) }), "endpoints[0].port"},
		{"no endpoints", base(func(m map[string]any) { m["endpoints"] = []any{} }), "endpoints"},
		{"bad host", base(func(m map[string]any) { m["endpoints"] = ep("not a host", 80) }), "endpoints[0].host"},
		{"duplicate endpoint", base(func(m map[string]any) {
			m["endpoints"] = []map[string]any{{"host": "a.internal", "port": 80}, {"host": "A.internal", "port": 80}}
		}), "endpoints[1]"},
		{"endpoint weight", base(func(m map[string]any) {
			m["endpoints"] = []map[string]any{{"host": "a.internal", "port": 80, "weight": 500}}
		}), "endpoints[0].weight"},
		{"bad scheme", base(func(m map[string]any) { m["scheme"] = "ftp" }), "scheme"},
		{"bad lb policy", base(func(m map[string]any) { m["lb_policy"] = "Sticky" }), "lb_policy"},
		{"consistent hash missing", base(func(m map[string]any) { m["lb_policy"] = "ConsistentHash" }), "consistent_hash"},
		{"consistent hash without the policy", base(func(m map[string]any) { m["consistent_hash"] = map[string]any{"type": "SourceIP"} }), "consistent_hash"},
		{"header hash without header", base(func(m map[string]any) {
			m["lb_policy"], m["consistent_hash"] = "ConsistentHash", map[string]any{"type": "Header"}
		}), "consistent_hash.header_name"},
		{"cookie hash without cookie", base(func(m map[string]any) {
			m["lb_policy"], m["consistent_hash"] = "ConsistentHash", map[string]any{"type": "Cookie"}
		}), "consistent_hash.cookie.name"},
		{"connect timeout above timeout", base(func(m map[string]any) { m["connect_timeout_ms"], m["timeout_ms"] = 5000, 1000 }), "connect_timeout_ms"},
		{"timeout too long", base(func(m map[string]any) { m["idle_timeout_ms"] = 7_200_000 }), "idle_timeout_ms"},
		{"http health check without path", base(func(m map[string]any) { m["health_check"] = map[string]any{"type": "HTTP"} }), "health_check.path"},
		{"health check timeout above interval", base(func(m map[string]any) {
			m["health_check"] = map[string]any{"type": "TCP", "interval_ms": 2000, "timeout_ms": 3000}
		}), "health_check.timeout_ms"},
		{"bad health check type", base(func(m map[string]any) { m["health_check"] = map[string]any{"type": "ICMP"} }), "health_check.type"},
		{"retry 11 times", base(func(m map[string]any) { m["retry"] = map[string]any{"num_retries": 11, "retry_on": []string{"5xx"}} }), "retry.num_retries"},
		{"retry on unknown", base(func(m map[string]any) { m["retry"] = map[string]any{"num_retries": 1, "retry_on": []string{"always"}} }), "retry.retry_on[0]"},
		{"negative circuit breaker", base(func(m map[string]any) { m["circuit_breaker"] = map[string]any{"max_pending_requests": -1} }), "circuit_breaker.max_pending_requests"},
		{"tls over plain http", base(func(m map[string]any) { m["tls"] = map[string]any{"insecure_skip_verify": true} }), "tls"},
		{"bad sni", base(func(m map[string]any) { m["scheme"], m["tls"] = "https", map[string]any{"sni": "no spaces please"} }), "tls.sni"},
	}
	for _, tc := range cases {
		requireProblem(t, dev.Post(prov+"/api-services/"+svc+"/backends", tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, dev.Post(prov+"/api-services/"+svc+"/backends", base(func(m map[string]any) { m["health_check"] = map[string]any{"type": "HTTP", "pth": "/"} })),
		400, "unknown_field", "health_check.pth")
	require.EqualValues(t, 0, countRows(t, w.env, "backends"))
}

// Creating POSTs honour Idempotency-Key like the rest of the API: a retry replays the first
// answer instead of failing on the taken name or creating a second row.
func TestCatalogIdempotentCreate(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP).WithHeader("Idempotency-Key", "svc-1")
	first := dev.Post(prov+"/api-services", serviceBody("idem"))
	require.Equal(t, http.StatusCreated, first.Status)
	again := dev.Post(prov+"/api-services", serviceBody("idem"))
	require.Equal(t, http.StatusCreated, again.Status)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first.Body), string(again.Body))
	require.EqualValues(t, 1, countRows(t, w.env, "api_services"))

	// A PATCH body must be an object.
	requireProblem(t, w.env.As(devP).Patch(prov+"/api-services/"+idOf(first.Map()), "null"), 400, "invalid_type", "body")
	requireProblem(t, w.env.As(devP).Patch(prov+"/api-services/"+idOf(first.Map()), "[]"), 400, "invalid_type", "body")
	requireProblem(t, w.env.As(devP).Patch(prov+"/api-services/not-a-uuid", map[string]any{}), 400, "invalid_id", "id")
}
