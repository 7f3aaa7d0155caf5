package http

import (
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/imprun/imprun-server/tracing"
)

// traceMiddleware starts a server span per request, named by the route template
// ("POST /v1/provider/publishes/:id/publish") so that ids never make names unbounded, as a child
// of the caller's W3C traceparent when there is one. Handlers pass the request's context on, so
// the workflow they start joins the trace. With tracing off no span is started: a no-op span
// would only carry the caller's trace context, which the request's context then carries itself
// (the access log's trace_id and what the handler starts see the same trace either way), and
// starting one cost every request its attributes, a context and a copy of the request.
//
// Echo applies middleware per request, so the tracer is looked up in the request, and only with
// tracing on: OpenTelemetry's global provider takes a process-wide lock for it, which 16
// concurrent requests contended on (BenchmarkRESTList's mutex profile).
func traceMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		ctx := tracing.Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		if !tracing.Enabled() {
			if ctx != req.Context() {
				c.SetRequest(req.WithContext(ctx))
			}
			return next(c)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		ctx, span := tracing.Tracer().Start(ctx, req.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", req.Method),
				attribute.String("http.route", route),
				attribute.String("url.path", req.URL.Path),
				attribute.String("imprun.request_id", requestID(c)),
			))
		defer span.End()
		c.SetRequest(req.WithContext(ctx))
		// The access log (next in the chain) has written any error response by now.
		err := next(c)
		status := c.Response().Status
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
		return err
	}
}
