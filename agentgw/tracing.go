package agentgw

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/tracing"
)

// resultTraceKey is where a stored result keeps the trace context the agent sent with it, so
// that passing the result on (now or by the sweeper, on any replica) continues that trace.
const resultTraceKey = "trace_context"

// traceContext bounds what an agent may make the server store: the W3C keys only, each of a
// sane length; nil when nothing is left.
func traceContext(m map[string]string) map[string]any {
	var out map[string]any
	for _, k := range []string{"traceparent", "tracestate"} {
		if v, ok := m[k]; ok && v != "" && len(v) <= 512 {
			if out == nil {
				out = map[string]any{}
			}
			out[k] = v
		}
	}
	return out
}

// traceDelivery records that c was handed to s's agent, as a span in the trace of whoever
// queued c (nothing when c carries no trace context: tracing was off).
func (g *Gateway) traceDelivery(s *session, c models.AgentCommand) {
	if len(c.TraceContext) == 0 {
		return
	}
	_, span := tracing.Tracer().Start(tracing.Extract(context.Background(), c.TraceContext), "agentgw.deliver "+c.Kind,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String("imprun.command_id", c.ID.String()), attribute.String("imprun.command_kind", c.Kind),
			attribute.String("imprun.agent_id", s.agentID.String()), attribute.String("imprun.cluster_id", s.clusterID.String()),
		))
	span.End()
}

// resultSpan starts the span of passing r on, a child of the agent's span for the command
// (from the trace context stored with the result); ctx is returned unchanged and the span is
// a no-op when the result has none.
func resultSpan(ctx context.Context, r store.UnpassedResult) (context.Context, trace.Span) {
	raw, _ := r.Result[resultTraceKey].(map[string]any)
	if len(raw) == 0 {
		return ctx, trace.SpanFromContext(context.Background()) // a no-op span
	}
	carrier := make(map[string]string, len(raw))
	for k, v := range raw {
		if s, ok := v.(string); ok {
			carrier[k] = s
		}
	}
	return tracing.Tracer().Start(tracing.Extract(ctx, carrier), "agentgw.result "+r.Kind,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
			attribute.String("imprun.command_id", r.CommandID.String()), attribute.String("imprun.command_kind", r.Kind),
			attribute.String("imprun.agent_id", r.AgentID.String()), attribute.String("imprun.cluster_id", r.ClusterID.String()),
			attribute.String("imprun.result_status", r.ResultStatus),
		))
}
