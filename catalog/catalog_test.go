package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

func intp(n int) *int { return &n }

// fields returns the failing fields of a validation error, or nil.
func fields(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	f, ok := fault.As(err)
	require.True(t, ok, "a fault: %v", err)
	require.Equal(t, fault.Invalid, f.Kind)
	var out []string
	for _, e := range f.Fields {
		out = append(out, e.Field)
	}
	return out
}

func validRoute() RouteInput {
	return RouteInput{Name: "orders", Paths: []models.PathMatch{{Type: models.PathPrefix, Value: "/orders"}},
		BackendRefs: []BackendRefInput{{BackendID: "7b0e7d8c-6a43-4c7e-9f0e-3c1a1f3d2b10"}}, Status: models.RouteActive}
}

func TestRouteRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(*RouteInput)
		fields []string
	}{
		{"valid", func(*RouteInput) {}, nil},
		{"name not a label", func(r *RouteInput) { r.Name = "Orders" }, []string{"name"}},
		{"wildcard not leftmost", func(r *RouteInput) { r.Hostnames = []string{"api.*.example.com"} }, []string{"hostnames[0]"}},
		{"duplicate host", func(r *RouteInput) { r.Hostnames = []string{"a.example.com", "a.example.com"} }, []string{"hostnames[1]"}},
		{"no paths", func(r *RouteInput) { r.Paths = nil }, []string{"paths"}},
		{"unsafe regex", func(r *RouteInput) { r.Paths = []models.PathMatch{{Type: models.PathRegex, Value: "(a+)+"}} }, []string{"paths[0].value"}},
		{"method", func(r *RouteInput) { r.Methods = []string{"GET", "FETCH"} }, []string{"methods[1]"}},
		{"present header with a value", func(r *RouteInput) {
			r.Headers = []models.HeaderMatch{{Name: "X-A", Type: models.MatchPresent, Value: "x"}}
		}, []string{"headers[0].value"}},
		{"weights must sum to 100", func(r *RouteInput) {
			r.BackendRefs = []BackendRefInput{{BackendID: "7b0e7d8c-6a43-4c7e-9f0e-3c1a1f3d2b10", Weight: intp(40)}, {BackendID: "8b0e7d8c-6a43-4c7e-9f0e-3c1a1f3d2b10", Weight: intp(40)}}
		}, []string{"backend_refs"}},
		{"several backends need weights", func(r *RouteInput) {
			r.BackendRefs = []BackendRefInput{{BackendID: "7b0e7d8c-6a43-4c7e-9f0e-3c1a1f3d2b10"}, {BackendID: "8b0e7d8c-6a43-4c7e-9f0e-3c1a1f3d2b10", Weight: intp(100)}}
		}, []string{"backend_refs[0].weight"}},
		{"backend timeout above request timeout", func(r *RouteInput) {
			r.Timeouts = &models.RouteTimeouts{RequestMS: intp(100), BackendRequestMS: intp(200)}
		}, []string{"timeouts.backend_request_ms"}},
		{"status", func(r *RouteInput) { r.Status = "on" }, []string{"status"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := validRoute()
			tc.change(&in)
			r, err := in.Validate()
			require.Equal(t, tc.fields, fields(t, err))
			if err == nil {
				require.Equal(t, 100, r.Priority, "the default priority")
				require.Equal(t, 100, r.BackendRefs.V[0].Weight, "a single backend takes all the traffic")
				require.NotNil(t, r.Methods, "lists are arrays, never null")
			}
		})
	}
}

func TestBackendDefaultsAndRules(t *testing.T) {
	t.Parallel()
	in := BackendInput{Name: "orders", Endpoints: []models.BackendEndpoint{{Host: "orders.internal", Port: 8080}},
		HealthCheck: &models.HealthCheck{Type: "HTTP", Path: "/healthz"}}
	b, err := in.Validate()
	require.NoError(t, err)
	require.Equal(t, models.SchemeHTTP, b.Scheme)
	require.Equal(t, models.LBRoundRobin, b.LBPolicy)
	require.Equal(t, models.BackendActive, b.Status)
	require.Equal(t, 1, b.Endpoints.V[0].Weight)
	require.Equal(t, 10_000, b.HealthCheck.V.IntervalMS)

	in = BackendInput{Name: "orders", Endpoints: []models.BackendEndpoint{{Host: "a", Port: 80}, {Host: "A", Port: 80}},
		LBPolicy: models.LBConsistentHash, TLS: &models.BackendTLS{}, ConnectTimeoutMS: intp(20), TimeoutMS: intp(10)}
	_, err = in.Validate()
	require.Equal(t, []string{"endpoints[1]", "consistent_hash", "connect_timeout_ms", "tls"}, fields(t, err))
}

func TestPolicySpecRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		typ, spec string
		fields    []string
	}{
		{"rate-limit", `{"requests_per_unit": 5, "unit": "second"}`, nil},
		{"jwt", `{}`, []string{"type"}},
		{"rate-limit", `null`, []string{"spec"}},
		{"rate-limit", `{"requests_per_unit": 5, "unit": "second", "per_ip": true}`, []string{"spec.per_ip"}},
		{"rate-limit", `{"requests_per_unit": "ten", "unit": "second"}`, []string{"spec.requests_per_unit"}},
		{"cors", `{"allow_origins": ["*"], "allow_methods": ["GET"], "allow_credentials": true}`, []string{"spec.allow_credentials"}},
		{"ip-deny", `{"cidrs": ["10.0.0.1/8"]}`, []string{"spec.cidrs[0]"}},
	}
	for _, tc := range cases {
		t.Run(tc.typ+" "+tc.spec, func(t *testing.T) {
			in := PolicyInput{Name: "p", Type: tc.typ, Spec: json.RawMessage(tc.spec)}
			var v validation
			in.check(&v)
			require.Equal(t, tc.fields, fields(t, v.Err()))
		})
	}

	in := PolicyInput{Name: "p", Type: "ip-deny", Spec: json.RawMessage(`{"cidrs": ["192.0.2.7", "2001:db8::/32"]}`)}
	var v validation
	p := in.check(&v)
	require.NoError(t, v.Err())
	require.JSONEq(t, `{"cidrs": ["192.0.2.7/32", "2001:db8::/32"]}`, string(p.Spec.V), "stored in canonical form")
}

func TestGatewayListenerRules(t *testing.T) {
	t.Parallel()
	in := GatewayInput{Name: "edge", GatewayClass: models.GatewayClassEnvoy, Status: models.GatewayActive, Listeners: []models.GatewayListener{
		{Name: "http", Port: 80, Protocol: models.ProtocolHTTP},
		{Name: "http", Port: 80, Protocol: models.ProtocolHTTPS},
		{Name: "tcp", Port: 9000, Protocol: models.ProtocolTCP, Hostname: "a.example.com"},
	}}
	_, err := in.Validate()
	require.Equal(t, []string{"listeners[1].name", "listeners[1].port", "listeners[1].tls", "listeners[2].hostname"}, fields(t, err))
}

func TestProductAndPlanRules(t *testing.T) {
	t.Parallel()
	p := ProductInput{Name: "  Orders  ", Version: "v1", Categories: []string{"Retail", "retail"}, DocsURL: "ftp://x",
		APIServices: []string{"not-a-uuid"}}
	_, err := p.Validate()
	require.Equal(t, []string{"categories[1]", "docs_url", "api_services[0]"}, fields(t, err))
	require.Equal(t, "Orders", p.Name, "the name is trimmed")

	pl := PlanInput{Name: "gold", Quota: &models.PlanQuota{Requests: 0, Period: "week"}}
	_, err = pl.Validate()
	require.Equal(t, []string{"rate_limit", "quota.requests", "quota.period"}, fields(t, err))

	products := products(&Catalog{})
	require.Equal(t, []string{"status"}, fields(t, products.CheckChange([]string{"name", "status"})))
	require.NoError(t, products.CheckChange([]string{"name"}))
}

func TestFailureNamesTheRow(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err           error
		kind          fault.Kind
		code, detail  string
		currentStatus string
	}{
		{store.ErrNotFound, fault.NotFound, "not_found", "route not found", ""},
		{fmt.Errorf("%w: duplicate key", store.ErrConflict), fault.Conflict, "name_taken", "a route with this name exists", ""},
		{store.ErrInUse, fault.Conflict, "in_use", "this route is used by a publish", ""},
		{store.ErrArchived, fault.Conflict, "product_archived", "the product is archived and read-only", models.ProductArchived},
		{&store.ReferencedError{By: "route", Names: []string{"a", "b"}}, fault.Conflict, "referenced", "the route is still referenced by route a, b", ""},
		{&store.TransitionError{From: "draft", To: "archived"}, fault.Conflict, "invalid_transition", "a draft route cannot become archived", "draft"},
		{store.RefErrors{{Field: "route_id", Message: "not a route of this API service"}}, fault.Invalid, "validation_failed", "the request has invalid fields", ""},
	}
	for _, tc := range cases {
		f, ok := fault.As(failure(tc.err, "route"))
		require.True(t, ok, tc.err)
		require.Equal(t, tc.kind, f.Kind)
		require.Equal(t, tc.code, f.Code)
		require.Equal(t, tc.detail, f.Detail)
		require.Equal(t, tc.currentStatus, f.CurrentStatus)
	}
	other := errors.New("connection refused")
	require.Same(t, other, failure(other, "route"), "errors the catalog does not know pass through")
	require.Equal(t, "API service not found", createFailure(store.ErrNotFound, "API service", "route").(*fault.Error).Detail)
}
