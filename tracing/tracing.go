// Package tracing sets up OpenTelemetry tracing for the imprun processes from the standard
// OTEL_* environment variables, and carries trace context across the places OpenTelemetry's
// own instrumentation does not reach: the agent command outbox (a JSONB column) and the agent
// protocol (a map field in commands and results).
//
// Tracing is off by default: the global tracer provider stays OpenTelemetry's no-op one, so a
// span costs nothing and no header or column is written. It is on when
// OTEL_TRACES_EXPORTER=otlp, or when OTEL_TRACES_EXPORTER is unset and an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is. The exporter,
// sampler, batch processor and resource read their usual variables themselves
// (OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER,
// OTEL_BSP_*, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES). OTEL_SDK_DISABLED=true turns it off.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// InstrumentationName names the tracer of imprun's own spans.
const InstrumentationName = "github.com/imprun/imprun-server"

var enabled atomic.Bool

// Enabled reports whether Setup (or Install) turned tracing on in this process.
func Enabled() bool { return enabled.Load() }

// Propagator is the W3C trace context (and baggage) propagator every imprun process uses.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Config is what Setup reads from the environment.
type Config struct {
	// Exporter is "otlp" or "none" (empty: decided by the endpoint variables).
	Exporter string
	// Protocol is "grpc" or "http/protobuf" (OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL; default grpc).
	Protocol string
	// Endpoint is set when an OTLP endpoint variable is.
	Endpoint bool
	// Disabled is OTEL_SDK_DISABLED=true.
	Disabled bool
}

// ConfigFromEnv reads the variables that decide whether and how to export.
func ConfigFromEnv(getenv func(string) string) Config {
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	return Config{
		Exporter: strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))),
		Protocol: strings.ToLower(strings.TrimSpace(proto)),
		Endpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "",
		Disabled: strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true"),
	}
}

// On reports whether c asks for tracing; an unknown exporter is an error, so a typo is not a
// silently untraced process.
func (c Config) On() (bool, error) {
	if c.Disabled {
		return false, nil
	}
	switch c.Exporter {
	case "":
		return c.Endpoint, nil
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	}
	return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported (use otlp or none)", c.Exporter)
}

// Setup configures the process's tracer provider and propagator from the environment and
// returns the function that flushes and stops it (a no-op when tracing is off). service is
// the default service name (OTEL_SERVICE_NAME wins).
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	cfg := ConfigFromEnv(os.Getenv)
	on, err := cfg.On()
	if err != nil || !on {
		return func(context.Context) error { return nil }, err
	}
	var exp sdktrace.SpanExporter
	switch cfg.Protocol {
	case "", "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		err = fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q is not supported (use grpc or http/protobuf)", cfg.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithAttributes(semconv.ServiceName(service)), resource.WithFromEnv(),
		resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	// The sampler comes from OTEL_TRACES_SAMPLER (parent-based always-on by default).
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	Install(tp)
	return tp.Shutdown, nil
}

// Install makes tp the process's tracer provider and turns tracing on (tests install one with
// an in-memory exporter). The returned function turns it off again (a no-op provider).
func Install(tp trace.TracerProvider) (uninstall func()) {
	otel.SetTextMapPropagator(Propagator)
	otel.SetTracerProvider(tp)
	enabled.Store(true)
	return func() {
		enabled.Store(false)
		otel.SetTracerProvider(noop.NewTracerProvider())
	}
}

// Tracer is the tracer of imprun's own spans.
func Tracer() trace.Tracer { return otel.Tracer(InstrumentationName) }

// Inject returns the trace context of ctx's span as a carrier map ("traceparent", ...), or
// nil when there is none (tracing off, or no span).
func Inject(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	Propagator.Inject(ctx, m)
	if len(m) == 0 {
		return nil
	}
	return m
}

// Extract returns ctx carrying the remote span context in m (unchanged when m has none).
func Extract(ctx context.Context, m map[string]string) context.Context {
	if len(m) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier(m))
}
