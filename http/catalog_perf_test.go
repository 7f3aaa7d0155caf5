package http_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/store/storetest"
)

// seedServices inserts n services into a tenant in one statement, with distinct creation
// times so the keyset order is the one real traffic would make.
func seedServices(t testing.TB, env *apitest.Env, tenantSlug, prefix string, n int) {
	t.Helper()
	env.DB.SeedServices(t, tenantSlug, prefix, n)
}

// A page of the service list costs the same number of queries with 10 services as with 1,000:
// one keyset query on the (tenant_id, created_at, id) index plus the fixed cost of the request
// (the caller and the tenant), never a query per row.
func TestListAPIServicesQueryCount(t *testing.T) {
	t.Parallel()
	// Counting starts before the API serves requests (apitest's Hooks are built before the
	// server starts), so the registration happens-before every query.
	var q *storetest.QueryCounter
	env := apitest.New(t, apitest.Options{Hooks: func(e *apitest.Env) httpapi.Hooks {
		q = e.DB.CountQueries()
		return httpapi.Hooks{}
	}})
	require.Equal(t, http.StatusCreated, env.As(opsP).Post("/v1/operator/tenants",
		map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": devP.Email}).Status)
	dev := env.As(devP)
	require.Equal(t, http.StatusOK, dev.Get(prov+"/api-services").Status, "the first request creates the user")

	queries := func(path string) int64 {
		t.Helper()
		// The same request first, so the principal is cached for both counts (its cache is
		// refreshed every few seconds and cleared by identity changes): what is counted is the
		// list's own queries.
		require.Equal(t, http.StatusOK, dev.Get(path).Status)
		before := q.Load()
		r := dev.Get(path)
		require.Equal(t, http.StatusOK, r.Status, string(r.Body))
		return q.Load() - before
	}
	cursorOf := func(path string) string {
		var page struct {
			NextCursor *string `json:"next_cursor"`
		}
		dev.Get(path).JSON(&page)
		require.NotNil(t, page.NextCursor)
		return *page.NextCursor
	}

	seedServices(t, env, "acme", "small", 10)
	small := map[string]int64{
		"first page":    queries(prov + "/api-services?limit=5"),
		"next page":     queries(prov + "/api-services?limit=5&cursor=" + cursorOf(prov+"/api-services?limit=5")),
		"status filter": queries(prov + "/api-services?limit=5&status=active"),
	}
	seedServices(t, env, "acme", "big", 990)
	big := map[string]int64{
		"first page":    queries(prov + "/api-services?limit=5"),
		"next page":     queries(prov + "/api-services?limit=5&cursor=" + cursorOf(prov+"/api-services?limit=5")),
		"status filter": queries(prov + "/api-services?limit=5&status=active"),
	}
	require.Equal(t, small, big, "queries per page with 10 and with 1,000 services")

	// And the page query walks the keyset index instead of sorting the tenant's rows.
	plan := env.DB.ServicePagePlan(t, "acme")
	require.Contains(t, plan, "api_services_tenant_page_idx", plan)
	require.NotContains(t, plan, "Sort", plan)
	for name, n := range small {
		require.True(t, n >= 1 && n <= 3, "%s: %d queries; want the caller, the tenant and one page query", name, n)
	}
}

// BenchmarkListAPIServices serves the first page and a page deep in a tenant of 10,000
// services (run with `go test -run '^$' -bench ListAPIServices ./http/`). Requests go over real
// HTTP with a real token, but skip the OpenAPI check so only the server is timed.
func BenchmarkListAPIServices(b *testing.B) {
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil))) // the access log would drown the figures
	b.Cleanup(func() { slog.SetDefault(prev) })

	env := apitest.New(b, apitest.Options{})
	if r := env.As(opsP).Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": devP.Email}); r.Status != http.StatusCreated {
		b.Fatalf("tenant: %d %s", r.Status, r.Body)
	}
	seedServices(b, env, "acme", "svc", 10_000)
	token := env.Token(devP)
	client := &http.Client{}
	get := func(path string) []byte {
		req, _ := http.NewRequest(http.MethodGet, env.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return body
	}
	// Walk to the middle of the list for the deep page.
	deep := prov + "/api-services?limit=100"
	for i := 0; i < 50; i++ {
		var page struct {
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(get(deep), &page); err != nil || page.NextCursor == nil {
			b.Fatalf("page %d: %v", i, err)
		}
		deep = prov + "/api-services?limit=20&cursor=" + *page.NextCursor
	}

	for _, bc := range []struct{ name, path string }{
		{"first_page", prov + "/api-services?limit=20"},
		{"page_5000", deep},
		{"status_filter", prov + "/api-services?limit=20&status=active"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				get(bc.path)
			}
		})
	}
}
