package http_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func getReady(t *testing.T, base string) (int, readyBody) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	var b readyBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&b))
	return resp.StatusCode, b
}

func startServer(t *testing.T, o httpapi.Options) (string, *httpapi.Server) {
	t.Helper()
	if o.BodyLimit == "" {
		o.BodyLimit = "1M"
	}
	srv := httpapi.NewServer(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String(), srv
}

// Readiness reflects the real dependencies: both up -> 200; Postgres stopped -> 503 naming it;
// Postgres back -> 200 again.
func TestReadyzReportsWhichDependencyIsDown(t *testing.T) {
	pg := testharness.StartPostgres(t) // private: this test stops it
	db, err := store.OpenDB(pg.NewDatabase(t))
	require.NoError(t, err)
	defer db.Close()
	tmp := testharness.Temporal(t)
	var holder temporalclient.Holder
	holder.Set(tmp.Client(t))

	base, _ := startServer(t, httpapi.Options{Checks: []httpapi.ReadyCheck{
		{Name: "postgres", Check: db.PingContext},
		{Name: "temporal", Check: holder.Check},
	}})

	code, body := getReady(t, base)
	require.Equal(t, http.StatusOK, code, "%+v", body)
	require.Equal(t, "ok", body.Checks["postgres"])
	require.Equal(t, "ok", body.Checks["temporal"])

	pg.Stop()
	code, body = getReady(t, base)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "unavailable", body.Status)
	require.True(t, strings.HasPrefix(body.Checks["postgres"], "down:"), body.Checks["postgres"])
	require.Equal(t, "ok", body.Checks["temporal"], "only the failing dependency is named")

	pg.Start()
	require.Eventually(t, func() bool { c, _ := getReady(t, base); return c == http.StatusOK }, 20*time.Second, 200*time.Millisecond)
}

func TestReadyzTemporalNotConnected(t *testing.T) {
	var holder temporalclient.Holder // never connected
	base, _ := startServer(t, httpapi.Options{Checks: []httpapi.ReadyCheck{{Name: "temporal", Check: holder.Check}}})
	code, body := getReady(t, base)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body.Checks["temporal"], "not connected")

	resp, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "liveness does not depend on Temporal")
}

// Shutdown lets an in-flight request finish and refuses new connections.
func TestGracefulShutdownFinishesInFlightRequests(t *testing.T) {
	started := make(chan struct{})
	base, srv := startServer(t, httpapi.Options{Register: func(e *echo.Echo) {
		e.GET("/slow", func(c echo.Context) error {
			close(started)
			time.Sleep(700 * time.Millisecond)
			return c.String(http.StatusOK, "finished")
		})
	}})
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{body: string(b)}
	}()
	<-started
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- srv.Shutdown(context.Background()) }()

	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, "finished", r.body)
	require.NoError(t, <-shutdownDone)
	_, err := http.Get(base + "/healthz")
	require.Error(t, err, "no new connections after shutdown")
}

func TestMetricsCountRequestsByRoute(t *testing.T) {
	base, _ := startServer(t, httpapi.Options{})
	for i := 0; i < 3; i++ {
		resp, err := http.Get(base + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
	}
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(b), `imprun_http_requests_total{method="GET",route="/healthz",status="200"} 3`)
	require.Contains(t, string(b), `imprun_http_request_duration_seconds_bucket{method="GET",route="/healthz",status="200"`)
}

func TestUnknownRouteIsProblemJSON(t *testing.T) {
	base, _ := startServer(t, httpapi.Options{})
	resp, err := http.Get(base + "/nope")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p httpapi.Problem
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
	require.Equal(t, "not_found", p.Code)
	require.NotEmpty(t, resp.Header.Get("X-Request-ID"))
}

// TestPostgresDownIs503: while Postgres is stopped a write answers 503 problem+json with
// code unavailable and Retry-After, never a 500; once it is back the same write succeeds.
func TestPostgresDownIs503(t *testing.T) {
	pg := testharness.StartPostgres(t) // private: this test stops it
	env := apitest.New(t, apitest.Options{DBURL: pg.NewDatabase(t)})
	ops := env.As(apitest.Persona{Email: "ops@example.com", Roles: []string{"operator"}})
	body := func(slug string) map[string]any {
		return map[string]any{"slug": slug, "name": slug, "type": "customer"}
	}
	require.Equal(t, http.StatusCreated, ops.Post("/v1/operator/tenants", body("before")).Status)

	pg.Stop()
	for _, r := range []*apitest.Response{ops.Post("/v1/operator/tenants", body("during")), ops.Get("/v1/operator/tenants")} {
		require.Equal(t, http.StatusServiceUnavailable, r.Status, string(r.Body))
		require.Equal(t, "unavailable", r.Problem().Code)
		require.NotEmpty(t, r.Header.Get("Retry-After"))
	}

	pg.Start()
	require.Eventually(t, func() bool { return ops.Post("/v1/operator/tenants", body("after")).Status == http.StatusCreated },
		20*time.Second, 200*time.Millisecond, "the write succeeds once Postgres is back")
}

// With tracing off no span is started, but a caller's W3C trace context still reaches the
// request's context: the access log names the caller's trace, as anything the handler starts
// would.
func TestUntracedRequestKeepsCallersTraceContext(t *testing.T) {
	t.Parallel()
	logs := &apitest.LockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	base, srv := startServer(t, httpapi.Options{Logger: log})
	srv.Echo().GET("/traced", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	req, err := http.NewRequest(http.MethodGet, base+"/traced", nil)
	require.NoError(t, err)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "route=/traced") }, 5*time.Second, 10*time.Millisecond)
	require.Contains(t, logs.String(), "trace_id=4bf92f3577b34da6a3ce929d0e0e4736")
}
