package http_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/store"
)

var initechOwner = apitest.Persona{Email: "owner@initech.test"}

// A second provider tenant sees none of acme's catalog: every id of acme's is a 404 in a path
// and a 422 in a body, and nothing links across tenants.
func TestCatalogTenantIsolation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.env.As(opsP).Post("/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "provider", "owner_email": initechOwner.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))

	acme := w.env.As(ownerP)
	a := newServiceFixture(t, acme, "payments")
	aPolicy := idOf(created(t, acme, prov+"/api-services/"+a.service+"/policies", policyBody("rl", "rate-limit", map[string]any{"requests_per_unit": 5, "unit": "second"})))
	aGlobal := idOf(created(t, acme, prov+"/policies", policyBody("g-cors", "cors", map[string]any{"allow_origins": []string{"*"}, "allow_methods": []string{"GET"}})))
	aGateway := idOf(created(t, acme, prov+"/gateways", gatewayBody("edge")))
	aProduct := idOf(created(t, acme, prov+"/products", map[string]any{"name": "Payments", "version": "1", "api_services": []string{a.service}}))
	aPlan := idOf(created(t, acme, prov+"/products/"+aProduct+"/plans", map[string]any{"name": "Free", "rate_limit": map[string]any{"requests": 1, "period": "second"}}))

	ini := w.env.As(initechOwner)
	// Same names are fine in another tenant.
	b := newServiceFixture(t, ini, "payments")
	created(t, ini, prov+"/gateways", gatewayBody("edge"))

	// Lists show only the tenant's own rows.
	require.Equal(t, []string{b.service}, ids(listItems(t, ini, prov+"/api-services")))
	require.Empty(t, listItems(t, ini, prov+"/policies"))
	require.Empty(t, listItems(t, ini, prov+"/products"))
	require.Len(t, listItems(t, ini, prov+"/gateways"), 1)

	// Every path with an id of acme's is a 404, reading or writing.
	for _, p := range []string{
		"/api-services/" + a.service, "/routes/" + a.route, "/backends/" + a.backend, "/policies/" + aPolicy, "/policies/" + aGlobal,
		"/gateways/" + aGateway, "/products/" + aProduct, "/plans/" + aPlan,
	} {
		requireProblem(t, ini.Get(prov+p), 404, "not_found", "", "GET "+p)
		requireProblem(t, ini.Patch(prov+p, map[string]any{"description": "mine now"}), 404, "not_found", "", "PATCH "+p)
		requireProblem(t, ini.Delete(prov+p), 404, "not_found", "", "DELETE "+p)
	}
	for _, p := range []string{"/routes", "/backends", "/policies"} {
		requireProblem(t, ini.Get(prov+"/api-services/"+a.service+p), 404, "not_found", "", "GET "+p)
	}
	requireProblem(t, ini.Get(prov+"/routes/"+a.route+"/effective-policies"), 404, "not_found", "")
	requireProblem(t, ini.Get(prov+"/products/"+aProduct+"/plans"), 404, "not_found", "")
	requireProblem(t, ini.Post(prov+"/api-services/"+a.service+"/routes", routeBody("x", b.backend)), 404, "not_found", "")
	requireProblem(t, ini.Post(prov+"/api-services/"+a.service+"/backends", backendBody("x")), 404, "not_found", "")
	requireProblem(t, ini.Post(prov+"/api-services/"+a.service+"/policies", policyBody("x", "timeout", map[string]any{"request_ms": 5})), 404, "not_found", "")
	requireProblem(t, ini.Post(prov+"/products/"+aProduct+"/plans", map[string]any{"name": "X", "rate_limit": map[string]any{"requests": 1, "period": "second"}}), 404, "not_found", "")
	for _, action := range []string{"activate", "deactivate", "archive"} {
		requireProblem(t, ini.Post(prov+"/products/"+aProduct+"/"+action, nil), 404, "not_found", "", action)
	}

	// acme's ids in a body are refused on the field, never linked.
	requireProblem(t, ini.Post(prov+"/products", map[string]any{"name": "Stolen", "version": "1", "api_services": []string{b.service, a.service}}),
		422, "validation_failed", "api_services[1]")
	mine := idOf(created(t, ini, prov+"/products", map[string]any{"name": "Mine", "version": "1"}))
	requireProblem(t, ini.Patch(prov+"/products/"+mine, map[string]any{"api_services": []string{a.service}}), 422, "validation_failed", "api_services[0]")
	requireProblem(t, ini.Post(prov+"/api-services/"+b.service+"/routes", routeBody("steal", a.backend)), 422, "validation_failed", "backend_refs[0].backend_id")
	requireProblem(t, ini.Patch(prov+"/routes/"+b.route, map[string]any{"backend_refs": []map[string]any{{"backend_id": a.backend}}}), 422, "validation_failed", "backend_refs[0].backend_id")
	requireProblem(t, ini.Post(prov+"/api-services/"+b.service+"/policies", policyBody("x", "timeout", map[string]any{"request_ms": 5}, "scope", "route", "route_id", a.route)),
		422, "validation_failed", "route_id")

	// acme's global policy does not apply to initech's routes.
	eff := ini.Get(prov + "/routes/" + b.route + "/effective-policies").Map()
	require.Empty(t, eff["items"])

	// And the database itself refuses a cross-tenant link even if a query forgot its filter.
	err := w.env.DB.InsertRouteAs(context.Background(), "initech", a.service, "sneaky")
	require.ErrorContains(t, err, "routes_service_fkey")
	err = w.env.DB.LinkServiceAs(context.Background(), "initech", mine, a.service)
	require.ErrorContains(t, err, "product_api_services_service_tenant_fkey")

	// acme's rows are untouched.
	require.Equal(t, []any{a.service}, acme.Get(prov + "/products/" + aProduct).Map()["api_services"])
	require.Len(t, listItems(t, acme, prov+"/api-services"), 1)
}

func ids(items []map[string]any) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, idOf(it))
	}
	return out
}

// stubUsage says a fixed set of rows is used by a published revision.
type stubUsage struct {
	mu    sync.Mutex
	inUse map[uuid.UUID]string // id -> kind
	asked []string
}

func (s *stubUsage) InUse(_ context.Context, _ uuid.UUID, kind string, id uuid.UUID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, kind)
	return s.inUse[id] == kind, nil
}

func (s *stubUsage) mark(kind, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inUse[uuid.MustParse(id)] = kind
}

// The publish hook: whatever a published revision uses cannot be changed or deleted (409
// in_use); everything else can.
func TestCatalogInUseIsRefused(t *testing.T) {
	t.Parallel()
	usage := &stubUsage{inUse: map[uuid.UUID]string{}}
	env := apitest.New(t, apitest.Options{Hooks: func(*apitest.Env) httpapi.Hooks { return httpapi.Hooks{CatalogUsage: usage} }})
	r := env.As(opsP).Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	owner := env.As(ownerP)

	used := newServiceFixture(t, owner, "used")
	free := newServiceFixture(t, owner, "free")
	usedPolicy := idOf(created(t, owner, prov+"/api-services/"+used.service+"/policies", policyBody("rl", "rate-limit", map[string]any{"requests_per_unit": 5, "unit": "second"})))
	usedGateway := idOf(created(t, owner, prov+"/gateways", gatewayBody("used")))
	require.Equal(t, http.StatusOK, owner.Patch(prov+"/api-services/"+used.service, map[string]any{"status": "active"}).Status)
	usedProduct := idOf(created(t, owner, prov+"/products", map[string]any{"name": "Used", "version": "1", "api_services": []string{used.service}}))
	require.Equal(t, http.StatusOK, owner.Post(prov+"/products/"+usedProduct+"/activate", nil).Status)
	usedPlan := idOf(created(t, owner, prov+"/products/"+usedProduct+"/plans", map[string]any{"name": "Free", "rate_limit": map[string]any{"requests": 1, "period": "second"}}))

	usage.mark(store.KindAPIService, used.service)
	usage.mark(store.KindRoute, used.route)
	usage.mark(store.KindBackend, used.backend)
	usage.mark(store.KindPolicy, usedPolicy)
	usage.mark(store.KindGateway, usedGateway)
	usage.mark(store.KindProduct, usedProduct)
	usage.mark(store.KindPlan, usedPlan)

	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"PATCH", "/api-services/" + used.service, map[string]any{"description": "x"}},
		{"DELETE", "/api-services/" + used.service, nil},
		{"PATCH", "/routes/" + used.route, map[string]any{"priority": 1}},
		{"DELETE", "/routes/" + used.route, nil},
		{"PATCH", "/backends/" + used.backend, map[string]any{"description": "x"}},
		{"DELETE", "/backends/" + used.backend, nil},
		{"PATCH", "/policies/" + usedPolicy, map[string]any{"enabled": false}},
		{"DELETE", "/policies/" + usedPolicy, nil},
		{"PATCH", "/gateways/" + usedGateway, map[string]any{"description": "x"}},
		{"DELETE", "/gateways/" + usedGateway, nil},
		{"PATCH", "/products/" + usedProduct, map[string]any{"description": "x"}},
		{"POST", "/products/" + usedProduct + "/deactivate", nil},
		{"POST", "/products/" + usedProduct + "/archive", nil},
		{"PATCH", "/plans/" + usedPlan, map[string]any{"description": "x"}},
		{"DELETE", "/plans/" + usedPlan, nil},
	} {
		r := owner.Do(req.method, prov+req.path, req.body)
		requireProblem(t, r, 409, "in_use", "", req.method+" "+req.path)
	}
	require.Equal(t, "test service", owner.Get(prov + "/api-services/" + used.service).Map()["description"], "nothing changed")
	require.EqualValues(t, 1, owner.Get(prov + "/plans/" + usedPlan).Map()["rate_limit"].(map[string]any)["requests"])

	// Rows no publish uses change freely, and the hook was asked about each kind.
	require.Equal(t, http.StatusOK, owner.Patch(prov+"/routes/"+free.route, map[string]any{"priority": 1}).Status)
	require.Equal(t, http.StatusNoContent, owner.Delete(prov+"/routes/"+free.route).Status)
	require.Equal(t, http.StatusNoContent, owner.Delete(prov+"/backends/"+free.backend).Status)
	require.Equal(t, http.StatusNoContent, owner.Delete(prov+"/api-services/"+free.service).Status)
	usage.mu.Lock()
	defer usage.mu.Unlock()
	require.Subset(t, usage.asked, []string{store.KindAPIService, store.KindRoute, store.KindBackend, store.KindPolicy, store.KindGateway, store.KindProduct, store.KindPlan})
}
