package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/tracing"
)

// TestOneTracePerPublish follows a REST publish through the whole stack with tracing on (an
// in-memory exporter in place of OTLP): the request's span, the workflow and its activities
// (Temporal's OpenTelemetry interceptor), the agent gateway's delivery of the outbox command,
// the agent's apply and the gateway passing the agent's result on as a signal to the workflow
// all have one trace id, and the spans that cross a process boundary through our own carriers
// (the outbox row, DeployCommand, DeployResult) are children of the span that sent them.
//
// Not parallel: it installs the process-wide tracer provider, and uninstalls it at the end.
func TestOneTracePerPublish(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	uninstall := tracing.Install(tp)
	t.Cleanup(func() { uninstall(); _ = tp.Shutdown(t.Context()) })

	s := newStack(t, stackOptions{}) // its Temporal client and worker are built with tracing on
	s.startAgent(t, t.TempDir(), s.token(t)).identity(t)

	r := s.owner.Post(prov+"/product-publishes", s.publishBody(nil))
	require.Equal(t, 201, r.Status, string(r.Body))
	pid := r.Map()["id"].(string)
	s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)

	byName := func(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, sp := range spans {
			if sp.Name == name {
				out = append(out, sp)
			}
		}
		return out
	}
	// The REST request that started it all.
	var root tracetest.SpanStub
	require.Eventually(t, func() bool {
		for _, sp := range byName(exp.GetSpans(), "POST /v1/provider/product-publishes") {
			if sp.SpanKind == trace.SpanKindServer {
				root = sp
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond)
	traceID := root.SpanContext.TraceID()
	require.True(t, traceID.IsValid())
	require.Contains(t, fmt.Sprint(root.Attributes), "201", "the span records the response status")

	want := []string{
		"StartWorkflow:PublishWorkflow", // the api's Temporal client, inside the request
		"RunWorkflow:PublishWorkflow",   // the worker
		"RunActivity:PrepareAndEnqueue", // the activity that freezes the revision and writes the outbox row
		"agentgw.deliver deploy",        // the gateway, from the outbox row's trace context
		"agent.deploy",                  // the agent, from DeployCommand.trace_context
		"agentgw.result deploy",         // the gateway, from DeployResult.trace_context
		"SignalWorkflow:deploy-result",  // ... signalling the workflow
		"HandleSignal:deploy-result",    // the workflow receiving it
		"RunActivity:FinishPublish",     // PUBLISHED written
	}
	inTrace := map[string]tracetest.SpanStub{}
	require.Eventually(t, func() bool {
		for _, sp := range exp.GetSpans() {
			if sp.SpanContext.TraceID() == traceID {
				if _, seen := inTrace[sp.Name]; !seen {
					inTrace[sp.Name] = sp
				}
			}
		}
		for _, n := range want {
			if _, ok := inTrace[n]; !ok {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "spans of trace %s: %v", traceID, func() []string { return names(inTrace) })

	// Our carriers keep the parent-child chain: outbox row -> gateway and agent; agent -> result.
	enqueue := inTrace["RunActivity:PrepareAndEnqueue"].SpanContext.SpanID()
	require.Equal(t, enqueue, inTrace["agentgw.deliver deploy"].Parent.SpanID())
	require.Equal(t, enqueue, inTrace["agent.deploy"].Parent.SpanID())
	require.True(t, inTrace["agent.deploy"].Parent.IsRemote(), "the agent continued a context it received")
	require.Equal(t, inTrace["agent.deploy"].SpanContext.SpanID(), inTrace["agentgw.result deploy"].Parent.SpanID())
	require.Equal(t, inTrace["agentgw.result deploy"].SpanContext.SpanID(), inTrace["SignalWorkflow:deploy-result"].Parent.SpanID())
	require.Contains(t, fmt.Sprint(inTrace["agent.deploy"].Attributes), pid)
	require.Contains(t, fmt.Sprint(inTrace["agent.deploy"].Attributes), "DEPLOY_STATUS_SUCCEEDED")
}

func names(m map[string]tracetest.SpanStub) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	return out
}
