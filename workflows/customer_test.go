package workflows

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/models"
)

// fakeSubscription applies transitions to an in-memory status, as the activity does in Postgres.
type fakeSubscription struct {
	mu          sync.Mutex
	status      string
	transitions []TransitionInput
	ignored     []IgnoredSignal
}

func (f *fakeSubscription) register(env *testsuite.TestWorkflowEnvironment) {
	env.RegisterActivityWithOptions(func(_ context.Context, in TransitionInput) (TransitionResult, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, from := range in.From {
			if f.status == from {
				f.status = in.To
				f.transitions = append(f.transitions, in)
				return TransitionResult{Applied: true, Status: f.status}, nil
			}
		}
		return TransitionResult{Status: f.status}, nil
	}, activity.RegisterOptions{Name: ActTransitionSubscription})
	env.RegisterActivityWithOptions(func(_ context.Context, in IgnoredSignal) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.ignored = append(f.ignored, in)
		return nil
	}, activity.RegisterOptions{Name: ActRecordIgnoredSignal})
}

func newSubscriptionEnv() (*testsuite.TestWorkflowEnvironment, *fakeSubscription) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	f := &fakeSubscription{status: models.SubscriptionPending}
	f.register(env)
	return env, f
}

func TestSubscriptionAutoApprovedThenCancelled(t *testing.T) {
	env, f := newSubscriptionEnv()
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalSuspend, Decision{Actor: "owner@acme.test", Reason: "unpaid", Source: "rest"})
	}, time.Hour)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalCancel, Decision{Actor: "dev@globex.test", Source: "rest"})
	}, 2*time.Hour)
	env.ExecuteWorkflow(SubscriptionWorkflow, SubscriptionInput{SubscriptionID: "s1"})
	require.NoError(t, env.GetWorkflowError())
	var out string
	require.NoError(t, env.GetWorkflowResult(&out))
	require.Equal(t, models.SubscriptionCancelled, out)
	require.Len(t, f.transitions, 3)
	require.Equal(t, "system", f.transitions[0].Decision.Actor)
	require.Equal(t, models.SubscriptionSuspended, f.transitions[1].To)
}

func TestSubscriptionApprovalFromCLIAndBadSignals(t *testing.T) {
	env, f := newSubscriptionEnv()
	env.RegisterDelayedCallback(func() {
		// Not a decision: ignored, recorded, nothing changes.
		env.SignalWorkflow(SignalApprove, map[string]any{"who": "nobody"})
		// A valid decision in the wrong state: ignored too.
		env.SignalWorkflow(SignalResume, Decision{Actor: "ops@example.com"})
	}, time.Hour)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryStatus)
		require.NoError(t, err)
		var st SubscriptionState
		require.NoError(t, v.Get(&st))
		require.Equal(t, models.SubscriptionPending, st.Status)
		require.Equal(t, 2, st.Ignored)
		env.SignalWorkflow(SignalApprove, map[string]any{"actor": "ops@example.com", "reason": "ok"}) // as `temporal workflow signal --input` sends it
	}, 2*time.Hour)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalCancel, Decision{Actor: "dev@globex.test", Source: "rest"})
	}, 3*time.Hour)
	env.ExecuteWorkflow(SubscriptionWorkflow, SubscriptionInput{SubscriptionID: "s1", ApprovalRequired: true, ApprovalDeadline: 7 * 24 * time.Hour})
	require.NoError(t, env.GetWorkflowError())
	require.Len(t, f.ignored, 2)
	require.Contains(t, f.ignored[0].Problem, "not a decision")
	require.Equal(t, models.SubscriptionActive, f.transitions[0].To)
	require.Equal(t, "temporal-cli", f.transitions[0].Decision.Source)
	require.Equal(t, "ops@example.com", f.transitions[0].Decision.Actor)
}

func TestSubscriptionExpiresAtDeadline(t *testing.T) {
	env, f := newSubscriptionEnv()
	env.ExecuteWorkflow(SubscriptionWorkflow, SubscriptionInput{SubscriptionID: "s1", ApprovalRequired: true, ApprovalDeadline: 48 * time.Hour})
	require.NoError(t, env.GetWorkflowError())
	var out string
	require.NoError(t, env.GetWorkflowResult(&out))
	require.Equal(t, models.SubscriptionExpired, out)
	require.Len(t, f.transitions, 1)
	require.Equal(t, "subscription.expire", f.transitions[0].Action)
}

// newCredentialSyncEnv plans a rollout to clusters a and b with action, and records the
// clusters each confirmation step confirms.
func newCredentialSyncEnv(action string) (*testsuite.TestWorkflowEnvironment, *[]string) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	confirmed := &[]string{}
	env.RegisterActivityWithOptions(func(_ context.Context, in CredentialSyncInput) (CredentialSyncPlan, error) {
		return CredentialSyncPlan{Targets: []RolloutTarget{
			{ClusterID: "a", CommandID: "ca", Action: action},
			{ClusterID: "b", CommandID: "cb", Action: action},
		}}, nil
	}, activity.RegisterOptions{Name: ActPlanCredentialSync})
	env.RegisterActivityWithOptions(func(_ context.Context, in ConfirmRolloutsInput) error {
		for _, c := range in.Clusters {
			*confirmed = append(*confirmed, c.ClusterID)
		}
		return nil
	}, activity.RegisterOptions{Name: ActConfirmRollouts})
	return env, confirmed
}

func TestCredentialSyncWaitsForEveryCluster(t *testing.T) {
	env, confirmedP := newCredentialSyncEnv(models.RolloutRevoke)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "ca", ClusterID: "a", AgentID: "x", Success: true})
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "cb", ClusterID: "b", AgentID: "y", Success: false, Message: "disk full"})
	}, time.Second)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryStatus)
		require.NoError(t, err)
		var st CredentialSyncState
		require.NoError(t, v.Get(&st))
		require.False(t, st.Done, "cluster b has not confirmed: the straggler stays visible")
		require.Equal(t, "disk full", st.Targets[1].LastMessage)
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "cb", ClusterID: "b", AgentID: "y", Success: true})
	}, 10*time.Hour)
	env.ExecuteWorkflow(CredentialSyncWorkflow, CredentialSyncInput{CredentialID: "c1", Version: 2})
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []string{"a", "b"}, *confirmedP)
}

// TestCredentialSyncConfirmsArrivedAcksTogether: the acknowledgements that arrived together
// are confirmed in one step, each cluster once even when two of its agents answered.
func TestCredentialSyncConfirmsArrivedAcksTogether(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	var calls [][]ClusterConfirmation
	env.RegisterActivityWithOptions(func(_ context.Context, in CredentialSyncInput) (CredentialSyncPlan, error) {
		return CredentialSyncPlan{Targets: []RolloutTarget{
			{ClusterID: "a", CommandID: "ca", Action: models.RolloutUpsert},
			{ClusterID: "b", CommandID: "cb", Action: models.RolloutUpsert},
			{ClusterID: "c", CommandID: "cc", Action: models.RolloutUpsert},
		}}, nil
	}, activity.RegisterOptions{Name: ActPlanCredentialSync})
	env.RegisterActivityWithOptions(func(_ context.Context, in ConfirmRolloutsInput) error {
		require.Equal(t, "c1", in.CredentialID)
		require.Equal(t, int64(3), in.Version)
		calls = append(calls, in.Clusters)
		return nil
	}, activity.RegisterOptions{Name: ActConfirmRollouts})
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "ca", ClusterID: "a", AgentID: "x1", Success: true})
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "ca", ClusterID: "a", AgentID: "x2", Success: true})
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "stale", ClusterID: "b", AgentID: "y", Success: true})
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "cb", ClusterID: "b", AgentID: "y", Success: true})
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "cc", ClusterID: "c", AgentID: "z", Success: true})
	}, 0) // all there before the run waits for the first one
	env.ExecuteWorkflow(CredentialSyncWorkflow, CredentialSyncInput{CredentialID: "c1", Version: 3})
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, [][]ClusterConfirmation{{
		{ClusterID: "a", CommandID: "ca", AgentID: "x1"},
		{ClusterID: "b", CommandID: "cb", AgentID: "y"},
		{ClusterID: "c", CommandID: "cc", AgentID: "z"},
	}}, calls)
}

// TestCredentialSyncContinuesAsNew: a rollout whose straggler keeps it waiting continues as a
// fresh run (same input: it plans again from Postgres) once its history is long, instead of
// growing towards Temporal's limit; acknowledgements that arrived are confirmed first.
func TestCredentialSyncContinuesAsNew(t *testing.T) {
	old := continueAsNewAfter
	continueAsNewAfter = -1 // every history is "long" (the test environment reports a length of 0)
	t.Cleanup(func() { continueAsNewAfter = old })
	env, confirmed := newCredentialSyncEnv(models.RolloutUpsert)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalCredentialAck, CredentialAck{CommandID: "ca", ClusterID: "a", AgentID: "x", Success: true})
	}, 30*time.Second)
	env.ExecuteWorkflow(CredentialSyncWorkflow, CredentialSyncInput{CredentialID: "c1", Version: 3})
	var can *workflow.ContinueAsNewError
	require.ErrorAs(t, env.GetWorkflowError(), &can, "cluster b never answers: the run carries on as a new one")
	require.Equal(t, "CredentialSyncWorkflow", can.WorkflowType.Name)
	require.Equal(t, []string{"a"}, *confirmed, "what arrived was confirmed before")
}
