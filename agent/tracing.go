package agent

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// tracerName names the agent's tracer. The spans go to the process's global tracer provider
// (cmd/agent configures it from OTEL_*; a no-op one when tracing is off).
const tracerName = "github.com/imprun/imprun-server/agent"

// w3c reads and writes the trace context fields of the protocol. It is fixed rather than the
// global propagator: the field is W3C trace context by contract, whatever else a process uses.
var w3c = propagation.TraceContext{}

// commandSpan starts the agent's span for a command, a child of the trace context the server
// sent with it. A command without one (tracing off on the server) gets a no-op span, so an
// untraced control plane costs the agent nothing.
func commandSpan(ctx context.Context, name string, tc map[string]string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if len(tc) == 0 {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = w3c.Extract(ctx, propagation.MapCarrier(tc))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return otel.Tracer(tracerName).Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// spanContext is the trace context of span for an answer's trace_context field (nil for a
// no-op span).
func spanContext(span trace.Span) map[string]string {
	if !span.SpanContext().IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	w3c.Inject(trace.ContextWithSpan(context.Background(), span), m)
	return m
}

func deployAttrs(cmd *agentv1.DeployCommand) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("imprun.command_id", cmd.GetCommandId()), attribute.String("imprun.publish_id", cmd.GetPublishId()),
		attribute.Int("imprun.revision", int(cmd.GetRevision())), attribute.String("imprun.deploy_action", cmd.GetAction().String()),
	}
}

// finishDeploySpan puts span's context into the result, so that the server's handling of the
// result joins the trace, and ends span with the result's outcome.
func finishDeploySpan(span trace.Span, res *agentv1.DeployResult) {
	res.TraceContext = spanContext(span)
	span.SetAttributes(attribute.String("imprun.deploy_status", res.GetStatus().String()))
	if res.GetStatus() != agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED {
		span.SetStatus(codes.Error, res.GetMessage())
	}
	span.End()
}

// finishAckSpan does the same for a CommandAck.
func finishAckSpan(span trace.Span, msg *agentv1.AgentMessage) {
	ack := msg.GetCommandAck()
	if ack == nil {
		span.End()
		return
	}
	ack.TraceContext = spanContext(span)
	if !ack.GetSuccess() {
		span.SetStatus(codes.Error, ack.GetMessage())
	}
	span.End()
}
