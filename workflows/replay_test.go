package workflows

import (
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
)

// TestReplayRecordedHistories replays histories recorded from real runs (the e2e stack: a
// publish to PUBLISHED, then its withdraw; a credential rolled out to two clusters) against the
// current workflow code. A change that would make runs in flight non-deterministic fails here;
// such a change needs workflow.GetVersion, and then a new recording.
func TestReplayRecordedHistories(t *testing.T) {
	for _, tc := range []struct {
		file string
		wf   any
	}{
		// Recorded before changePresenceOnDemand: replays the periodic presence refresh.
		{"testdata/publish_history.json", PublishWorkflow},
		// Since changePresenceOnDemand: a wait with no refresh timer (an agent came after 1.5 s).
		{"testdata/publish_v1_history.json", PublishWorkflow},
		// Since changeLeanStart: freeze and queue in one local activity, no presence read (the
		// agent came online while the run waited).
		{"testdata/publish_v2_history.json", PublishWorkflow},
		// Since PublishShapeLeanStart: the same run with its shape in the input, no version
		// marker and no TemporalChangeVersion upsert.
		{"testdata/publish_v3_history.json", PublishWorkflow},
		{"testdata/withdraw_history.json", WithdrawWorkflow},
		// Recorded before versionBatchedConfirm: replays the one-activity-per-ack steps.
		{"testdata/credential_sync_v0_history.json", CredentialSyncWorkflow},
		{"testdata/credential_sync_v1_history.json", CredentialSyncWorkflow},
		// The e2e rollout: soak, a gate approved from the CLI, a failure that spent the budget,
		// a cluster timed out at its deadline, then abort with rollbacks.
		{"testdata/rollout_history.json", RolloutWorkflow},
	} {
		r := worker.NewWorkflowReplayer()
		r.RegisterWorkflow(tc.wf)
		require.NoError(t, r.ReplayWorkflowHistoryFromJSONFile(nil, tc.file), tc.file)

		// The workers run with the OpenTelemetry tracing interceptor when tracing is on: it
		// must not change a command sequence either (runs started untraced continue traced).
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()))
		ti, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{Tracer: tp.Tracer("replay")})
		require.NoError(t, err)
		rt, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{Interceptors: []interceptor.WorkerInterceptor{ti}})
		require.NoError(t, err)
		rt.RegisterWorkflow(tc.wf)
		require.NoError(t, rt.ReplayWorkflowHistoryFromJSONFile(nil, tc.file), tc.file+" with the tracing interceptor")
	}
}
