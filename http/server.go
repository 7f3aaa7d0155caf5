// Package http is the REST API of imprun-server: the Echo server, its middleware (request
// id, access log, recovery, metrics, auth, tenancy, RBAC, audit, idempotency), the handlers of
// every persona group and the OpenAPI document that is the contract of all of them.
package http

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"net"
	nethttp "net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

//go:embed openapi.yaml
var openAPIDocument []byte

// OpenAPIDocument returns the embedded OpenAPI document.
func OpenAPIDocument() []byte { return openAPIDocument }

// ReadyCheck is one dependency that /readyz checks.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Server is the REST API.
type Server struct {
	echo    *echo.Echo
	log     *slog.Logger
	checks  []ReadyCheck
	metrics *httpMetrics
	httpSrv *nethttp.Server
}

// Options configure the server.
type Options struct {
	Logger       *slog.Logger
	BodyLimit    string // Echo size syntax, e.g. 1M
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	Checks       []ReadyCheck
	Registry     *prometheus.Registry // nil: a new one
	// Register adds the /v1 routes; the foundation server runs without them.
	Register func(e *echo.Echo)
	// TrustedProxies are the peers whose X-Forwarded-For is believed; from anyone else the
	// client address is the connection's (no header can spoof an audit entry's ip).
	TrustedProxies []*net.IPNet
}

// NewServer builds the Echo server with the operational endpoints and common middleware.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.IPExtractor = echo.ExtractIPDirect()
	if len(o.TrustedProxies) > 0 {
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, n := range o.TrustedProxies {
			opts = append(opts, echo.TrustIPRange(n))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	}
	s := &Server{echo: e, log: o.Logger, checks: o.Checks, metrics: newHTTPMetrics(o.Registry)}
	e.HTTPErrorHandler = s.handleError

	e.Use(requestIDMiddleware)
	e.Use(traceMiddleware)
	e.Use(s.accessLog)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("panic", "request_id", requestID(c), "err", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimit(o.BodyLimit))

	e.GET("/healthz", func(c echo.Context) error { return c.JSON(nethttp.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{})))
	e.GET("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(nethttp.StatusOK, "application/yaml", openAPIDocument)
	})
	if o.Register != nil {
		o.Register(e)
	}
	s.httpSrv = &nethttp.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
	}
	return s
}

// Handler returns the server's net/http Handler (for tests with httptest).
func (s *Server) Handler() nethttp.Handler { return s.echo }

// Echo exposes the router for registering more routes.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.httpSrv.Serve(ln)
	if errors.Is(err, nethttp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.httpSrv.Shutdown(ctx) }

type readyReport struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	rep := readyReport{Status: "ok", Checks: map[string]string{}}
	code := nethttp.StatusOK
	for _, chk := range s.checks {
		if err := chk.Check(ctx); err != nil {
			rep.Checks[chk.Name] = "down: " + err.Error()
			rep.Status = "unavailable"
			code = nethttp.StatusServiceUnavailable
			continue
		}
		rep.Checks[chk.Name] = "ok"
	}
	return c.JSON(code, rep)
}

func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p := toProblem(err)
	if p.Status >= 500 && p.Code == "internal" {
		s.log.Error("request failed", "request_id", requestID(c), "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	if p.Status == nethttp.StatusServiceUnavailable {
		s.log.Warn("dependency unavailable", "request_id", requestID(c), "code", p.Code, "err", err)
		if c.Response().Header().Get("Retry-After") == "" {
			c.Response().Header().Set("Retry-After", "5")
		}
	}
	p.Instance = c.Request().URL.Path
	c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
	if c.Request().Method == nethttp.MethodHead {
		_ = c.NoContent(p.Status)
		return
	}
	_ = c.JSON(p.Status, p)
	c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
}

func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		s.metrics.observe(c.Request().Method, route, status, elapsed)
		level := slog.LevelInfo
		if route == "/healthz" || route == "/readyz" || route == "/metrics" {
			level = slog.LevelDebug
		}
		ctx := c.Request().Context()
		if !s.log.Enabled(ctx, level) {
			return nil
		}
		// Attrs, not key-value pairs: no boxing of every value on each request.
		attrs := make([]slog.Attr, 0, 11)
		attrs = append(attrs, slog.String("request_id", requestID(c)), slog.String("method", c.Request().Method), slog.String("route", route),
			slog.String("path", c.Request().URL.Path), slog.Int("status", status), slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
			slog.Int64("bytes_out", c.Response().Size), slog.String("ip", c.RealIP()))
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
		}
		if p := principalOf(c); p != nil {
			attrs = append(attrs, slog.String("actor", p.Email))
		}
		if t := tenantOf(c); t != nil {
			attrs = append(attrs, slog.String("tenant", t.Slug))
		}
		s.log.LogAttrs(ctx, level, "request", attrs...)
		return nil
	}
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// series holds the counter and histogram of each (method, route, status) seen, so a
	// request does not format its status and hash its labels twice to find them.
	series sync.Map // routeSeries -> seriesObservers
}

type routeSeries struct {
	method, route string
	status        int
}

type seriesObservers struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imprun_http_requests_total", Help: "HTTP requests by method, route template and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imprun_http_request_duration_seconds", Help: "HTTP request latency by method, route template and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .2, .5, 1, 2.5, 5},
		}, []string{"method", "route", "status"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	k := routeSeries{method, route, status}
	o, ok := m.series.Load(k)
	if !ok {
		st := strconv.Itoa(status)
		o, _ = m.series.LoadOrStore(k, seriesObservers{m.requests.WithLabelValues(method, route, st), m.latency.WithLabelValues(method, route, st)})
	}
	so := o.(seriesObservers)
	so.requests.Inc()
	so.latency.Observe(d.Seconds())
}
