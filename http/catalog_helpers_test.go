package http_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
)

// Helpers shared by the catalog tests (catalog_*_test.go).

const prov = "/v1/provider"

// created posts body to path, requires a 201 and returns the body as a map.
func created(t testing.TB, c *apitest.Client, path string, body any) map[string]any {
	t.Helper()
	r := c.Post(path, body)
	require.Equal(t, http.StatusCreated, r.Status, "POST %s: %s", path, r.Body)
	return r.Map()
}

// idOf is the id of a created row.
func idOf(m map[string]any) string { return m["id"].(string) }

// requireProblem requires a problem with status and code and, when field is set, an error on
// exactly that field among the errors.
func requireProblem(t *testing.T, r *apitest.Response, status int, code, field string, msgAndArgs ...any) {
	t.Helper()
	require.Equal(t, status, r.Status, append([]any{"body: %s"}, r.Body)...)
	p := r.Problem()
	require.Equal(t, code, p.Code, msgAndArgs...)
	if field != "" {
		var fields []string
		for _, e := range p.Errors {
			fields = append(fields, e.Field)
		}
		require.Contains(t, fields, field, "failing fields of %s", r.Body)
	}
}

// serviceBody is a valid API service.
func serviceBody(name string) map[string]any {
	return map[string]any{"name": name, "version": "1.0.0", "description": "test service"}
}

// backendBody is a valid backend.
func backendBody(name string) map[string]any {
	return map[string]any{"name": name, "scheme": "http", "endpoints": []map[string]any{{"host": "10.0.0.1", "port": 8080}}}
}

// routeBody is a valid route to the given backends, weights split evenly (the last takes the rest).
func routeBody(name string, backendIDs ...string) map[string]any {
	refs := []map[string]any{}
	for i, id := range backendIDs {
		w := 100 / len(backendIDs)
		if i == len(backendIDs)-1 {
			w = 100 - w*(len(backendIDs)-1)
		}
		refs = append(refs, map[string]any{"backend_id": id, "weight": w})
	}
	return map[string]any{"name": name, "paths": []map[string]any{{"type": "prefix", "value": "/" + name}}, "backend_refs": refs}
}

// svcFixture is a service with one backend and one route to it.
type svcFixture struct {
	service, backend, route string
}

func newServiceFixture(t testing.TB, c *apitest.Client, name string) svcFixture {
	t.Helper()
	var f svcFixture
	f.service = idOf(created(t, c, prov+"/api-services", serviceBody(name)))
	f.backend = idOf(created(t, c, prov+"/api-services/"+f.service+"/backends", backendBody(name+"-be")))
	f.route = idOf(created(t, c, prov+"/api-services/"+f.service+"/routes", routeBody(name+"-rt", f.backend)))
	return f
}

// policyBody is a policy of type with spec.
func policyBody(name, typ string, spec any, extra ...any) map[string]any {
	m := map[string]any{"name": name, "type": typ, "spec": spec}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i].(string)] = extra[i+1]
	}
	return m
}

// gatewayBody is a valid gateway template with an HTTP listener.
func gatewayBody(name string) map[string]any {
	return map[string]any{"name": name, "listeners": []map[string]any{{"name": "http", "port": 80, "protocol": "HTTP"}}}
}

// auditActions lists the catalog audit entries of a tenant, oldest first.
func auditActions(t *testing.T, w *world, resourceType string) []models.AuditLog {
	t.Helper()
	return w.env.DB.AuditLogs(t, w.acme.ID, resourceType)
}

func names(items []map[string]any) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, fmt.Sprint(it["name"]))
	}
	return out
}

// listItems GETs a list path and returns its items.
func listItems(t *testing.T, c *apitest.Client, path string) []map[string]any {
	t.Helper()
	r := c.Get(path)
	require.Equal(t, http.StatusOK, r.Status, "GET %s: %s", path, r.Body)
	var page struct {
		Items []map[string]any `json:"items"`
	}
	r.JSON(&page)
	return page.Items
}
