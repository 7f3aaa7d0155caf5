package http_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
)

func TestGatewayCRUD(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(tadminP)
	created(t, admin, prov+"/certificates", map[string]any{"name": "api-cert", "namespace": "certs"})

	gw := created(t, admin, prov+"/gateways", map[string]any{
		"name": "edge", "description": "public edge", "labels": map[string]any{"env": "prod"},
		"listeners": []map[string]any{
			{"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
			{"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "api.example.com",
				"tls": map[string]any{"mode": "Terminate", "certificate_refs": []map[string]any{{"name": "api-cert", "namespace": "certs"}}}},
			{"name": "tls-pass", "port": 8443, "protocol": "TLS", "tls": map[string]any{"mode": "Passthrough"}},
			{"name": "raw", "port": 9000, "protocol": "TCP"},
		},
	})
	require.Equal(t, "envoy-gateway", gw["gateway_class"], "default class")
	require.Equal(t, "inactive", gw["status"], "templates start inactive")
	id := idOf(gw)
	requireProblem(t, admin.Post(prov+"/gateways", gatewayBody("edge")), 409, "name_taken", "")
	created(t, admin, prov+"/gateways", map[string]any{"name": "internal", "gateway_class": "nginx",
		"listeners": []map[string]any{{"name": "http", "port": 8080, "protocol": "HTTP"}}})

	require.ElementsMatch(t, []string{"edge", "internal"}, names(listItems(t, w.env.As(viewerP), prov+"/gateways")))
	require.Equal(t, []string{"internal"}, names(listItems(t, admin, prov+"/gateways?gateway_class=nginx")))

	r := admin.Patch(prov+"/gateways/"+id, map[string]any{"status": "active", "listeners": []map[string]any{{"name": "http", "port": 8080, "protocol": "HTTP"}}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Len(t, r.Map()["listeners"], 1, "listeners are replaced whole")
	require.Equal(t, "active", r.Map()["status"])
	requireProblem(t, admin.Patch(prov+"/gateways/"+id, map[string]any{"name": "edge-2"}), 422, "validation_failed", "name")
	requireProblem(t, admin.Patch(prov+"/gateways/"+id, map[string]any{"listeners": []map[string]any{{"name": "h", "port": 443, "protocol": "HTTPS",
		"tls": map[string]any{"mode": "Terminate", "certifcate_refs": []any{}}}}}), 400, "unknown_field", "listeners[0].tls.certifcate_refs")
	requireProblem(t, admin.Patch(prov+"/gateways/"+id, map[string]any{"gateway_class": "haproxy"}), 422, "validation_failed", "gateway_class")

	require.Equal(t, http.StatusNoContent, admin.Delete(prov+"/gateways/"+id).Status)
	requireProblem(t, admin.Get(prov+"/gateways/"+id), 404, "not_found", "")
	var actions []string
	for _, a := range auditActions(t, w, "gateway") {
		actions = append(actions, a.Action)
	}
	require.Equal(t, []string{"gateway.create", "gateway.create", "gateway.update", "gateway.delete"}, actions)
}

func TestGatewayValidation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(tadminP)
	l := func(name string, port int, proto string, extra ...any) map[string]any {
		m := map[string]any{"name": name, "port": port, "protocol": proto}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	body := func(listeners ...map[string]any) map[string]any {
		return map[string]any{"name": "gw", "listeners": listeners}
	}
	cert := map[string]any{"mode": "Terminate", "certificate_refs": []map[string]any{{"name": "c"}}}
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"name of one character", map[string]any{"name": "g", "listeners": []any{l("http", 80, "HTTP")}}, "name"},
		{"name with capitals", map[string]any{"name": "Edge", "listeners": []any{l("http", 80, "HTTP")}}, "name"},
		{"name with underscore", map[string]any{"name": "edge_gw", "listeners": []any{l("http", 80, "HTTP")}}, "name"},
		{"name ending with a dash", map[string]any{"name": "edge-", "listeners": []any{l("http", 80, "HTTP")}}, "name"},
		{"unknown class", map[string]any{"name": "gw", "gateway_class": "traefik", "listeners": []any{l("http", 80, "HTTP")}}, "gateway_class"},
		{"no listeners", body(), "listeners"},
		{"duplicate listener port", body(l("a", 80, "HTTP"), l("b", 80, "HTTP")), "listeners[1].port"},
		{"duplicate listener name", body(l("a", 80, "HTTP"), l("a", 81, "HTTP")), "listeners[1].name"},
		{"port 0", body(l("a", 0, "HTTP")), "listeners[0].port"},
		{"port 70000", body(l("a", 70000, "HTTP")), "listeners[0].port"},
		{"unknown protocol", body(l("a", 80, "UDP")), "listeners[0].protocol"},
		{"listener name", body(l("A", 80, "HTTP")), "listeners[0].name"},
		{"wildcard in the middle", body(l("a", 80, "HTTP", "hostname", "api.*.example.com")), "listeners[0].hostname"},
		{"bare wildcard", body(l("a", 80, "HTTP", "hostname", "*")), "listeners[0].hostname"},
		{"two wildcards", body(l("a", 80, "HTTP", "hostname", "*.*.example.com")), "listeners[0].hostname"},
		{"hostname too long", body(l("a", 80, "HTTP", "hostname", longHost())), "listeners[0].hostname"},
		{"hostname on TCP", body(l("a", 9000, "TCP", "hostname", "db.example.com")), "listeners[0].hostname"},
		{"HTTPS without tls", body(l("a", 443, "HTTPS")), "listeners[0].tls"},
		{"HTTPS passthrough", body(l("a", 443, "HTTPS", "tls", map[string]any{"mode": "Passthrough"})), "listeners[0].tls.mode"},
		{"HTTPS without certificate", body(l("a", 443, "HTTPS", "tls", map[string]any{"mode": "Terminate"})), "listeners[0].tls.certificate_refs"},
		{"TLS without tls", body(l("a", 443, "TLS")), "listeners[0].tls"},
		{"passthrough with certificate", body(l("a", 443, "TLS", "tls", map[string]any{"mode": "Passthrough", "certificate_refs": []map[string]any{{"name": "c"}}})), "listeners[0].tls.certificate_refs"},
		{"HTTP with tls", body(l("a", 80, "HTTP", "tls", cert)), "listeners[0].tls"},
		{"bad certificate name", body(l("a", 443, "HTTPS", "tls", map[string]any{"mode": "Terminate", "certificate_refs": []map[string]any{{"name": "Bad Cert"}}})), "listeners[0].tls.certificate_refs[0].name"},
		{"bad label", map[string]any{"name": "gw", "listeners": []any{l("a", 80, "HTTP")}, "labels": map[string]any{"k": "value with spaces"}}, "labels.k"},
		{"bad status", map[string]any{"name": "gw", "listeners": []any{l("a", 80, "HTTP")}, "status": "on"}, "status"},
	}
	for _, tc := range cases {
		requireProblem(t, admin.Post(prov+"/gateways", tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, admin.Post(prov+"/gateways", body(l("a", 80, "HTTP", "allowed_routes", "All"))), 400, "unknown_field", "listeners[0].allowed_routes")
	require.EqualValues(t, 0, countRows(t, w.env, "gateways"))
}

func longHost() string {
	h := "a"
	for len(h) < 260 {
		h += ".abcdefgh"
	}
	return h
}

func TestProductLifecycle(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(tadminP)
	dev := w.env.As(devP)
	s1 := idOf(created(t, dev, prov+"/api-services", serviceBody("accounts")))
	s2 := idOf(created(t, dev, prov+"/api-services", serviceBody("ledger")))

	p := created(t, admin, prov+"/products", map[string]any{
		"name": "Banking API", "version": "2024-06", "description": "Accounts and ledger", "categories": []string{"finance", "banking"},
		"docs_url": "https://docs.example.com/banking", "logo_url": "https://cdn.example.com/logo.png", "api_services": []string{s2, s1},
	})
	id := idOf(p)
	require.Equal(t, "draft", p["status"], "products start as drafts")
	require.Equal(t, []any{s2, s1}, p["api_services"], "links keep their order")
	require.Equal(t, []any{s2, s1}, w.env.As(viewerP).Get(prov + "/products/" + id).Map()["api_services"])

	// Activation needs an active linked service.
	requireProblem(t, admin.Post(prov+"/products/"+id+"/activate", nil), 422, "validation_failed", "api_services")
	empty := idOf(created(t, admin, prov+"/products", map[string]any{"name": "Empty", "version": "1"}))
	requireProblem(t, admin.Post(prov+"/products/"+empty+"/activate", nil), 422, "validation_failed", "api_services")
	require.Equal(t, http.StatusOK, dev.Patch(prov+"/api-services/"+s1, map[string]any{"status": "active"}).Status)
	r := admin.Post(prov+"/products/"+id+"/activate", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "active", r.Map()["status"])
	r = admin.Post(prov+"/products/"+id+"/activate", nil)
	requireProblem(t, r, 409, "invalid_transition", "")
	require.Equal(t, "active", r.Problem().CurrentStatus)
	require.Equal(t, []string{"Banking API"}, names(listItems(t, admin, prov+"/products?status=active")))

	// Linked services are replaced whole; an active product keeps an active one.
	requireProblem(t, admin.Patch(prov+"/products/"+id, map[string]any{"api_services": []string{s2}}), 422, "validation_failed", "api_services")
	r = admin.Patch(prov+"/products/"+id, map[string]any{"api_services": []string{s1}, "categories": []string{"finance"}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, []any{s1}, r.Map()["api_services"])
	require.Equal(t, "Accounts and ledger", r.Map()["description"])
	requireProblem(t, admin.Patch(prov+"/products/"+id, map[string]any{"status": "archived"}), 422, "validation_failed", "status")
	requireProblem(t, admin.Delete(prov+"/products/"+id), 409, "product_active", "")

	// A service a product links cannot be deleted.
	r = dev.Delete(prov + "/api-services/" + s1)
	requireProblem(t, r, 409, "referenced", "")
	require.Contains(t, r.Problem().Detail, "Banking API")

	// active -> draft -> active -> archived; archived is read-only.
	r = admin.Post(prov+"/products/"+id+"/deactivate", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "draft", r.Map()["status"])
	requireProblem(t, admin.Post(prov+"/products/"+id+"/archive", nil), 409, "invalid_transition", "")
	require.Equal(t, http.StatusOK, admin.Post(prov+"/products/"+id+"/activate", nil).Status)
	plan := created(t, admin, prov+"/products/"+id+"/plans", map[string]any{"name": "Free", "rate_limit": map[string]any{"requests": 10, "period": "minute"}})
	r = admin.Post(prov+"/products/"+id+"/archive", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "archived", r.Map()["status"])
	for _, req := range []struct{ method, path string }{
		{"PATCH", "/products/" + id}, {"DELETE", "/products/" + id},
		{"POST", "/products/" + id + "/activate"}, {"POST", "/products/" + id + "/deactivate"}, {"POST", "/products/" + id + "/archive"},
		{"POST", "/products/" + id + "/plans"}, {"PATCH", "/plans/" + idOf(plan)}, {"DELETE", "/plans/" + idOf(plan)},
	} {
		var body any
		switch {
		case req.method == "PATCH":
			body = map[string]any{"description": "changed"}
		case req.method == "POST" && req.path == "/products/"+id+"/plans":
			body = map[string]any{"name": "Pro", "rate_limit": map[string]any{"requests": 100, "period": "minute"}}
		}
		r := admin.Do(req.method, prov+req.path, body)
		requireProblem(t, r, 409, "product_archived", "", req.method+" "+req.path)
		require.Equal(t, "archived", r.Problem().CurrentStatus, req.method+" "+req.path)
	}
	require.Equal(t, "Accounts and ledger", admin.Get(prov + "/products/" + id).Map()["description"], "nothing changed")
	require.Len(t, listItems(t, admin, prov+"/products/"+id+"/plans"), 1)

	// A draft product may be deleted, with its plans.
	draftPlan := created(t, admin, prov+"/products/"+empty+"/plans", map[string]any{"name": "Free", "rate_limit": map[string]any{"requests": 1, "period": "second"}})
	require.Equal(t, http.StatusNoContent, admin.Delete(prov+"/products/"+empty).Status)
	requireProblem(t, admin.Get(prov+"/plans/"+idOf(draftPlan)), 404, "not_found", "")

	var actions []string
	for _, a := range auditActions(t, w, "product") {
		if a.ResourceID == id {
			actions = append(actions, a.Action)
			if a.Action == "product.archive" {
				require.Equal(t, map[string]any{"before": "active", "after": "archived"}, a.Summary["status"])
			}
			if a.Action == "product.update" {
				require.Equal(t, map[string]any{"before": []any{s2, s1}, "after": []any{s1}}, a.Summary["api_services"])
			}
		}
	}
	require.Equal(t, []string{"product.create", "product.activate", "product.update", "product.deactivate", "product.activate", "product.archive"}, actions)
}

func TestProductValidation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(tadminP)
	s1 := idOf(created(t, w.env.As(devP), prov+"/api-services", serviceBody("accounts")))
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"name too short", map[string]any{"name": "A", "version": "1"}, "name"},
		{"blank name", map[string]any{"name": "   ", "version": "1"}, "name"},
		{"no version", map[string]any{"name": "Banking"}, "version"},
		{"docs url not http", map[string]any{"name": "Banking", "version": "1", "docs_url": "ftp://docs.example.com"}, "docs_url"},
		{"logo url relative", map[string]any{"name": "Banking", "version": "1", "logo_url": "/logo.png"}, "logo_url"},
		{"duplicate category", map[string]any{"name": "Banking", "version": "1", "categories": []string{"Finance", "finance"}}, "categories[1]"},
		{"service id not a uuid", map[string]any{"name": "Banking", "version": "1", "api_services": []string{s1, "accounts"}}, "api_services[1]"},
		{"service twice", map[string]any{"name": "Banking", "version": "1", "api_services": []string{s1, s1}}, "api_services[1]"},
		{"unknown service", map[string]any{"name": "Banking", "version": "1", "api_services": []string{s1, "00000000-0000-0000-0000-000000000001"}}, "api_services[1]"},
	}
	for _, tc := range cases {
		requireProblem(t, admin.Post(prov+"/products", tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, admin.Post(prov+"/products", map[string]any{"name": "Banking", "version": "1", "status": "active"}), 400, "unknown_field", "status")
	require.EqualValues(t, 0, countRows(t, w.env, "products"))
}

func TestPlans(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(tadminP)
	product := idOf(created(t, admin, prov+"/products", map[string]any{"name": "Maps", "version": "1"}))
	plans := prov + "/products/" + product + "/plans"

	free := created(t, admin, plans, map[string]any{"name": "Free", "description": "Try it", "rate_limit": map[string]any{"requests": 10, "period": "minute"}})
	require.Nil(t, free["quota"])
	require.Equal(t, product, free["product_id"])
	pro := created(t, admin, plans, map[string]any{"name": "Pro", "rate_limit": map[string]any{"requests": 100, "period": "second"},
		"quota": map[string]any{"requests": 1000000, "period": "month"}})
	require.Equal(t, map[string]any{"requests": 1000000.0, "period": "month"}, pro["quota"])
	requireProblem(t, admin.Post(plans, map[string]any{"name": "Free", "rate_limit": map[string]any{"requests": 1, "period": "day"}}), 409, "name_taken", "")

	require.ElementsMatch(t, []string{"Free", "Pro"}, names(listItems(t, w.env.As(viewerP), plans)))
	r := admin.Patch(prov+"/plans/"+idOf(free), map[string]any{"quota": map[string]any{"requests": 100, "period": "day"}, "rate_limit": map[string]any{"requests": 20}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, map[string]any{"requests": 20.0, "period": "minute"}, r.Map()["rate_limit"], "objects merge")
	r = admin.Patch(prov+"/plans/"+idOf(free), map[string]any{"quota": nil})
	require.Equal(t, http.StatusOK, r.Status)
	require.Nil(t, r.Map()["quota"])

	for _, tc := range []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no rate limit", map[string]any{"name": "X"}, "rate_limit"},
		{"rate limit of 0", map[string]any{"name": "X", "rate_limit": map[string]any{"requests": 0, "period": "second"}}, "rate_limit.requests"},
		{"rate limit per week", map[string]any{"name": "X", "rate_limit": map[string]any{"requests": 1, "period": "week"}}, "rate_limit.period"},
		{"quota per hour", map[string]any{"name": "X", "rate_limit": map[string]any{"requests": 1, "period": "second"}, "quota": map[string]any{"requests": 1, "period": "hour"}}, "quota.period"},
		{"quota of 0", map[string]any{"name": "X", "rate_limit": map[string]any{"requests": 1, "period": "second"}, "quota": map[string]any{"requests": 0, "period": "day"}}, "quota.requests"},
		{"no name", map[string]any{"rate_limit": map[string]any{"requests": 1, "period": "second"}}, "name"},
	} {
		requireProblem(t, admin.Post(plans, tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, admin.Post(prov+"/products/00000000-0000-0000-0000-000000000009/plans", map[string]any{"name": "X", "rate_limit": map[string]any{"requests": 1, "period": "second"}}),
		404, "not_found", "")
	requireProblem(t, admin.Get(prov+"/products/00000000-0000-0000-0000-000000000009/plans"), 404, "not_found", "")

	require.Equal(t, http.StatusNoContent, admin.Delete(prov+"/plans/"+idOf(pro)).Status)
	require.Equal(t, []string{"Free"}, names(listItems(t, admin, plans)))
	var actions []string
	for _, a := range auditActions(t, w, "plan") {
		actions = append(actions, a.Action)
	}
	require.Equal(t, []string{"plan.create", "plan.create", "plan.update", "plan.update", "plan.delete"}, actions)
}

// Certificates belong to tenants: a template may name only a certificate its tenant registered;
// another tenant's, or none at all, is the same 404; a named certificate can't be removed.
func TestGatewayCertificatesAreTheTenants(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(tadminP)
	https := func(name, ns string) map[string]any {
		ref := map[string]any{"name": name}
		if ns != "" {
			ref["namespace"] = ns
		}
		return map[string]any{"name": "edge-" + name, "listeners": []map[string]any{{"name": "https", "port": 443, "protocol": "HTTPS",
			"tls": map[string]any{"mode": "Terminate", "certificate_refs": []map[string]any{ref}}}}}
	}
	requireProblem(t, admin.Post(prov+"/gateways", https("api-cert", "")), 404, "not_found", "")

	cert := created(t, admin, prov+"/certificates", map[string]any{"name": "api-cert", "description": "public edge"})
	requireProblem(t, admin.Post(prov+"/certificates", map[string]any{"name": "api-cert"}), 409, "name_taken", "")
	requireProblem(t, admin.Post(prov+"/certificates", map[string]any{"name": "Bad Name"}), 422, "validation_failed", "name")
	requireProblem(t, w.env.As(viewerP).Post(prov+"/certificates", map[string]any{"name": "other"}), 403, "forbidden", "")
	requireProblem(t, admin.Post(prov+"/gateways", https("api-cert", "other-ns")), 404, "not_found", "")
	gw := idOf(created(t, admin, prov+"/gateways", https("api-cert", "")))
	require.Equal(t, []string{"api-cert"}, names(listItems(t, w.env.As(viewerP), prov+"/certificates")))

	// Another provider tenant registers the same name: still its own, and acme's is not.
	ops := w.env.As(opsP)
	r := ops.Post("/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "provider", "owner_email": "boss@initech.test"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	initech := w.env.As(apitest.Persona{Email: "boss@initech.test"})
	requireProblem(t, initech.Post(prov+"/gateways", https("api-cert", "")), 404, "not_found", "")
	require.Equal(t, http.StatusNotFound, initech.Get(prov+"/certificates/"+idOf(cert)).Status)
	require.Equal(t, http.StatusNotFound, initech.Delete(prov+"/certificates/"+idOf(cert)).Status)

	// A change to an unregistered certificate is refused the same way; the one in use stays.
	requireProblem(t, admin.Patch(prov+"/gateways/"+gw, map[string]any{"listeners": https("nope", "")["listeners"]}), 404, "not_found", "")
	requireProblem(t, admin.Delete(prov+"/certificates/"+idOf(cert)), 409, "referenced", "")
	require.Equal(t, http.StatusNoContent, admin.Delete(prov+"/gateways/"+gw).Status)
	require.Equal(t, http.StatusNoContent, admin.Delete(prov+"/certificates/"+idOf(cert)).Status)
}
