package http_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
)

func TestPolicyCRUD(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	f := newServiceFixture(t, dev, "billing")

	g := created(t, dev, prov+"/policies", policyBody("deny-bad", "ip-deny", map[string]any{"cidrs": []string{"192.0.2.7", "2001:db8::/32"}}))
	require.Equal(t, "global", g["scope"])
	require.Nil(t, g["api_service_id"])
	require.Nil(t, g["route_id"])
	require.Equal(t, "security", g["category"])
	require.Equal(t, true, g["enabled"], "enabled by default")
	require.EqualValues(t, 100, g["priority"])
	require.Equal(t, map[string]any{"cidrs": []any{"192.0.2.7/32", "2001:db8::/32"}}, g["spec"], "a bare address is stored as its prefix")

	s := created(t, dev, prov+"/api-services/"+f.service+"/policies",
		policyBody("rl", "rate-limit", map[string]any{"requests_per_unit": 100, "unit": "minute"}, "priority", 10))
	require.Equal(t, "service", s["scope"])
	require.Equal(t, f.service, s["api_service_id"])
	require.Equal(t, "traffic", s["category"])
	require.Equal(t, map[string]any{"requests_per_unit": 100.0, "unit": "minute", "burst": 0.0}, s["spec"], "the canonical spec")

	r := created(t, dev, prov+"/api-services/"+f.service+"/policies",
		policyBody("hdr", "header-modifier", map[string]any{"request": map[string]any{"set": []map[string]any{{"name": "X-Api", "value": "billing"}}}},
			"scope", "route", "route_id", f.route, "enabled", false))
	require.Equal(t, "route", r["scope"])
	require.Equal(t, f.route, r["route_id"])
	require.Equal(t, f.service, r["api_service_id"])
	require.Equal(t, false, r["enabled"])

	require.Equal(t, []string{"deny-bad"}, names(listItems(t, w.env.As(viewerP), prov+"/policies")))
	require.ElementsMatch(t, []string{"rl", "hdr"}, names(listItems(t, dev, prov+"/api-services/"+f.service+"/policies")))
	require.Equal(t, []string{"hdr"}, names(listItems(t, dev, prov+"/api-services/"+f.service+"/policies?scope=route")))
	require.Equal(t, []string{"hdr"}, names(listItems(t, dev, prov+"/api-services/"+f.service+"/policies?route_id="+f.route)))
	require.Equal(t, []string{"rl"}, names(listItems(t, dev, prov+"/api-services/"+f.service+"/policies?enabled=true")))
	require.Equal(t, []string{"rl"}, names(listItems(t, dev, prov+"/api-services/"+f.service+"/policies?type=rate-limit")))
	requireProblem(t, dev.Get(prov+"/policies?type=jwt"), 400, "invalid_query", "type")

	// The spec merges like the rest of the body; a refused change leaves the policy as it was.
	resp := dev.Patch(prov+"/policies/"+idOf(s), map[string]any{"spec": map[string]any{"burst": 20}, "enabled": false})
	require.Equal(t, http.StatusOK, resp.Status, string(resp.Body))
	require.Equal(t, map[string]any{"requests_per_unit": 100.0, "unit": "minute", "burst": 20.0}, resp.Map()["spec"])
	require.Equal(t, false, resp.Map()["enabled"])
	requireProblem(t, dev.Patch(prov+"/policies/"+idOf(s), map[string]any{"spec": map[string]any{"unit": "week"}}), 422, "validation_failed", "spec.unit")
	requireProblem(t, dev.Patch(prov+"/policies/"+idOf(s), map[string]any{"spec": map[string]any{"colour": "red"}}), 422, "validation_failed", "spec.colour")
	requireProblem(t, dev.Patch(prov+"/policies/"+idOf(s), map[string]any{"type": "cors"}), 422, "validation_failed", "type")
	requireProblem(t, dev.Patch(prov+"/policies/"+idOf(s), map[string]any{"scope": "global"}), 422, "validation_failed", "scope")
	requireProblem(t, dev.Patch(prov+"/policies/"+idOf(r), map[string]any{"route_id": f.backend}), 422, "validation_failed", "route_id")
	require.Equal(t, "minute", dev.Get(prov + "/policies/" + idOf(s)).Map()["spec"].(map[string]any)["unit"])

	require.Equal(t, http.StatusNoContent, dev.Delete(prov+"/policies/"+idOf(g)).Status)
	requireProblem(t, dev.Get(prov+"/policies/"+idOf(g)), 404, "not_found", "")
	// A route's policies go with the route.
	require.Equal(t, http.StatusNoContent, dev.Delete(prov+"/routes/"+f.route).Status)
	requireProblem(t, dev.Get(prov+"/policies/"+idOf(r)), 404, "not_found", "")

	var actions []string
	for _, a := range auditActions(t, w, "policy") {
		actions = append(actions, a.Action)
	}
	require.Equal(t, []string{"policy.create", "policy.create", "policy.create", "policy.update", "policy.delete"}, actions)
}

func TestPolicyValidation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	f := newServiceFixture(t, dev, "catalog")
	other := newServiceFixture(t, dev, "other")
	svcPolicies := prov + "/api-services/" + f.service + "/policies"

	cases := []struct {
		name  string
		path  string
		body  map[string]any
		field string
	}{
		{"unknown type", svcPolicies, policyBody("p", "jwt", map[string]any{}), "type"},
		{"no spec", svcPolicies, map[string]any{"name": "p", "type": "cors"}, "spec"},
		{"spec not an object", svcPolicies, policyBody("p", "cors", "allow everything"), "spec"},
		{"unknown spec field", svcPolicies, policyBody("p", "rate-limit", map[string]any{"requests_per_unit": 1, "unit": "second", "per_ip": true}), "spec.per_ip"},
		{"spec field of the wrong type", svcPolicies, policyBody("p", "rate-limit", map[string]any{"requests_per_unit": "ten", "unit": "second"}), "spec.requests_per_unit"},
		{"rate-limit below 1", svcPolicies, policyBody("p", "rate-limit", map[string]any{"requests_per_unit": 0, "unit": "second"}), "spec.requests_per_unit"},
		{"rate-limit unit", svcPolicies, policyBody("p", "rate-limit", map[string]any{"requests_per_unit": 5, "unit": "week"}), "spec.unit"},
		{"rate-limit negative burst", svcPolicies, policyBody("p", "rate-limit", map[string]any{"requests_per_unit": 5, "unit": "second", "burst": -1}), "spec.burst"},
		{"cors credentials with *", svcPolicies, policyBody("p", "cors", map[string]any{
			"allow_origins": []string{"*"}, "allow_methods": []string{"GET"}, "allow_credentials": true}), "spec.allow_credentials"},
		{"cors credentials with * header", svcPolicies, policyBody("p", "cors", map[string]any{
			"allow_origins": []string{"https://app.example.com"}, "allow_methods": []string{"GET"}, "allow_headers": []string{"*"}, "allow_credentials": true}), "spec.allow_credentials"},
		{"cors without origins", svcPolicies, policyBody("p", "cors", map[string]any{"allow_origins": []string{}, "allow_methods": []string{"GET"}}), "spec.allow_origins"},
		{"cors without methods", svcPolicies, policyBody("p", "cors", map[string]any{"allow_origins": []string{"*"}}), "spec.allow_methods"},
		{"cors bad origin", svcPolicies, policyBody("p", "cors", map[string]any{"allow_origins": []string{"https://a.example.com", "example.com/path"}, "allow_methods": []string{"GET"}}), "spec.allow_origins[1]"},
		{"cors bad method", svcPolicies, policyBody("p", "cors", map[string]any{"allow_origins": []string{"*"}, "allow_methods": []string{"GRAB"}}), "spec.allow_methods[0]"},
		{"cors max age", svcPolicies, policyBody("p", "cors", map[string]any{"allow_origins": []string{"*"}, "allow_methods": []string{"GET"}, "max_age_seconds": -5}), "spec.max_age_seconds"},
		{"header-modifier empty", svcPolicies, policyBody("p", "header-modifier", map[string]any{}), "spec"},
		{"header-modifier set and remove", svcPolicies, policyBody("p", "header-modifier", map[string]any{"response": map[string]any{
			"set": []map[string]any{{"name": "Server", "value": "x"}}, "remove": []string{"server"}}}), "spec.response.remove[0]"},
		{"header-modifier bad name", svcPolicies, policyBody("p", "header-modifier", map[string]any{"request": map[string]any{
			"add": []map[string]any{{"name": "Bad Name", "value": "x"}}}}), "spec.request.add[0].name"},
		{"header-modifier unknown nested field", svcPolicies, policyBody("p", "header-modifier", map[string]any{"request": map[string]any{"append": []string{}}}), "spec.request.append"},
		{"url-rewrite empty", svcPolicies, policyBody("p", "url-rewrite", map[string]any{}), "spec"},
		{"url-rewrite path type", svcPolicies, policyBody("p", "url-rewrite", map[string]any{"path": map[string]any{"type": "regex", "value": "/x"}}), "spec.path.type"},
		{"url-rewrite path value", svcPolicies, policyBody("p", "url-rewrite", map[string]any{"path": map[string]any{"type": "prefix", "value": "x"}}), "spec.path.value"},
		{"retry 0", svcPolicies, policyBody("p", "retry", map[string]any{"num_retries": 0, "retry_on": []string{"5xx"}}), "spec.num_retries"},
		{"retry 11", svcPolicies, policyBody("p", "retry", map[string]any{"num_retries": 11, "retry_on": []string{"5xx"}}), "spec.num_retries"},
		{"retry without triggers", svcPolicies, policyBody("p", "retry", map[string]any{"num_retries": 3}), "spec.retry_on"},
		{"retry unknown trigger", svcPolicies, policyBody("p", "retry", map[string]any{"num_retries": 3, "retry_on": []string{"5xx", "sometimes"}}), "spec.retry_on[1]"},
		{"timeout empty", svcPolicies, policyBody("p", "timeout", map[string]any{}), "spec"},
		{"timeout backend above request", svcPolicies, policyBody("p", "timeout", map[string]any{"request_ms": 100, "backend_request_ms": 200}), "spec.backend_request_ms"},
		{"ip-allow empty", svcPolicies, policyBody("p", "ip-allow", map[string]any{"cidrs": []string{}}), "spec.cidrs"},
		{"ip-allow not a cidr", svcPolicies, policyBody("p", "ip-allow", map[string]any{"cidrs": []string{"10.0.0.0/8", "10.0.0.0/33"}}), "spec.cidrs[1]"},
		{"ip-deny host bits", svcPolicies, policyBody("p", "ip-deny", map[string]any{"cidrs": []string{"10.1.2.3/8"}}), "spec.cidrs[0]"},
		{"ip-deny duplicate", svcPolicies, policyBody("p", "ip-deny", map[string]any{"cidrs": []string{"10.0.0.1", "10.0.0.1/32"}}), "spec.cidrs[1]"},
		{"bad name", svcPolicies, policyBody("Rate Limit", "rate-limit", map[string]any{"requests_per_unit": 1, "unit": "second"}), "name"},
		{"priority", svcPolicies, policyBody("p", "rate-limit", map[string]any{"requests_per_unit": 1, "unit": "second"}, "priority", -1), "priority"},
		{"route policy of another service's route", svcPolicies, policyBody("p", "timeout", map[string]any{"request_ms": 100}, "scope", "route", "route_id", other.route), "route_id"},
		{"route policy without route", svcPolicies, policyBody("p", "timeout", map[string]any{"request_ms": 100}, "scope", "route"), "route_id"},
		{"service policy with a route", svcPolicies, policyBody("p", "timeout", map[string]any{"request_ms": 100}, "route_id", f.route), "route_id"},
		{"global under a service", svcPolicies, policyBody("p", "timeout", map[string]any{"request_ms": 100}, "scope", "global"), "scope"},
		{"service scope on /policies", prov + "/policies", policyBody("p", "timeout", map[string]any{"request_ms": 100}, "scope", "service"), "scope"},
		{"route id on /policies", prov + "/policies", policyBody("p", "timeout", map[string]any{"request_ms": 100}, "route_id", f.route), "route_id"},
	}
	for _, tc := range cases {
		requireProblem(t, dev.Post(tc.path, tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, dev.Post(prov+"/api-services/00000000-0000-0000-0000-000000000009/policies",
		policyBody("p", "timeout", map[string]any{"request_ms": 100})), 404, "not_found", "")
	require.EqualValues(t, 0, countRows(t, w.env, "policies"))

	// Valid specs of every type are accepted.
	for _, body := range []map[string]any{
		policyBody("cors", "cors", map[string]any{"allow_origins": []string{"https://app.example.com", "https://*.example.org"}, "allow_methods": []string{"GET", "POST"},
			"allow_headers": []string{"Authorization"}, "expose_headers": []string{"X-Request-Id"}, "max_age_seconds": 600, "allow_credentials": true}),
		policyBody("hm", "header-modifier", map[string]any{"request": map[string]any{"add": []map[string]any{{"name": "X-A", "value": "1"}, {"name": "X-A", "value": "2"}}},
			"response": map[string]any{"remove": []string{"Server"}}}),
		policyBody("rw", "url-rewrite", map[string]any{"hostname": "upstream.internal", "path": map[string]any{"type": "prefix", "value": "/v2"}}),
		policyBody("retry", "retry", map[string]any{"num_retries": 3, "retry_on": []string{"5xx", "connect-failure"}, "per_try_timeout_ms": 500}),
		policyBody("timeout", "timeout", map[string]any{"request_ms": 3000, "backend_request_ms": 2500}),
		policyBody("allow", "ip-allow", map[string]any{"cidrs": []string{"10.0.0.0/8"}}),
	} {
		created(t, dev, svcPolicies, body)
	}
}

// The precedence route > service > global, exercised through the API: per type, the most
// specific scope with an enabled policy wins; disabled policies fall back.
func TestEffectivePoliciesThroughAPI(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dev := w.env.As(devP)
	f := newServiceFixture(t, dev, "search")
	other := newServiceFixture(t, dev, "other")
	rl := func(n int) map[string]any { return map[string]any{"requests_per_unit": n, "unit": "second"} }
	cors := map[string]any{"allow_origins": []string{"*"}, "allow_methods": []string{"GET"}}
	timeout := map[string]any{"request_ms": 1000}

	created(t, dev, prov+"/policies", policyBody("g-rl", "rate-limit", rl(1000)))
	created(t, dev, prov+"/policies", policyBody("g-cors", "cors", cors))
	created(t, dev, prov+"/policies", policyBody("g-timeout-off", "timeout", timeout, "enabled", false))
	created(t, dev, prov+"/api-services/"+f.service+"/policies", policyBody("s-rl", "rate-limit", rl(100)))
	created(t, dev, prov+"/api-services/"+f.service+"/policies", policyBody("s-hm-low", "header-modifier",
		map[string]any{"request": map[string]any{"set": []map[string]any{{"name": "X-A", "value": "1"}}}}, "priority", 1))
	created(t, dev, prov+"/api-services/"+f.service+"/policies", policyBody("s-hm-high", "header-modifier",
		map[string]any{"request": map[string]any{"set": []map[string]any{{"name": "X-B", "value": "1"}}}}, "priority", 500))
	rrl := created(t, dev, prov+"/api-services/"+f.service+"/policies", policyBody("r-rl", "rate-limit", rl(10), "scope", "route", "route_id", f.route, "enabled", false))
	// Policies of another service or route never leak in.
	created(t, dev, prov+"/api-services/"+other.service+"/policies", policyBody("o-retry", "retry", map[string]any{"num_retries": 1, "retry_on": []string{"5xx"}}))
	created(t, dev, prov+"/api-services/"+other.service+"/policies", policyBody("o-r-timeout", "timeout", timeout, "scope", "route", "route_id", other.route))

	effective := func(route string) ([]string, []string) {
		r := w.env.As(viewerP).Get(prov + "/routes/" + route + "/effective-policies")
		require.Equal(t, http.StatusOK, r.Status, string(r.Body))
		var body struct {
			RouteID string `json:"route_id"`
			Items   []struct{ Name, Scope string }
		}
		r.JSON(&body)
		require.Equal(t, route, body.RouteID)
		var ns, scopes []string
		for _, it := range body.Items {
			ns, scopes = append(ns, it.Name), append(scopes, it.Scope)
		}
		return ns, scopes
	}
	got, scopes := effective(f.route)
	// cors (global), header-modifier (service, by priority), rate-limit (service beats global).
	require.Equal(t, []string{"g-cors", "s-hm-high", "s-hm-low", "s-rl"}, got)
	require.Equal(t, []string{"global", "service", "service", "service"}, scopes)

	require.Equal(t, http.StatusOK, dev.Patch(prov+"/policies/"+idOf(rrl), map[string]any{"enabled": true}).Status)
	got, _ = effective(f.route)
	require.Equal(t, []string{"g-cors", "s-hm-high", "s-hm-low", "r-rl"}, got, "the enabled route policy wins")

	got, _ = effective(other.route)
	require.Equal(t, []string{"g-cors", "g-rl", "o-retry", "o-r-timeout"}, got)

	requireProblem(t, dev.Get(prov+"/routes/00000000-0000-0000-0000-000000000009/effective-policies"), 404, "not_found", "")
}

// The document's policy types are the ones the server knows.
func TestPolicyTypesMatchTheDocument(t *testing.T) {
	doc := apitest.Document(t)
	var documented []string
	for _, v := range doc.Components.Schemas["PolicyType"].Value.Enum {
		documented = append(documented, v.(string))
	}
	require.Equal(t, models.PolicyTypes(), documented)
}
