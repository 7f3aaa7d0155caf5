package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/models"
)

// fakeActivities stand in for the activities package: they record what the workflow asked.
type fakeActivities struct {
	mu         sync.Mutex
	prepareErr error
	finished   []FinishInput
	enqueued   []DeployCommandInput
	cancelled  []string
	presence   int
}

func (f *fakeActivities) register(env *testsuite.TestWorkflowEnvironment) {
	env.RegisterActivityWithOptions(func(_ context.Context, in PrepareInput) (PrepareResult, error) {
		if f.prepareErr != nil {
			return PrepareResult{}, f.prepareErr
		}
		return PrepareResult{Checksum: "sha-" + in.PublishID}, nil
	}, activity.RegisterOptions{Name: ActPreparePublish})
	env.RegisterActivityWithOptions(func(_ context.Context, in DeployCommandInput) (DeployCommandResult, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.enqueued = append(f.enqueued, in)
		return DeployCommandResult{CommandID: "cmd-" + in.Action}, nil
	}, activity.RegisterOptions{Name: ActEnqueueDeploy})
	env.RegisterActivityWithOptions(func(_ context.Context, in PrepareInput) (PreparedDeploy, error) {
		if f.prepareErr != nil {
			return PreparedDeploy{}, f.prepareErr
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.enqueued = append(f.enqueued, DeployCommandInput{PublishID: in.PublishID, ClusterID: in.ClusterID, Revision: in.Revision,
			Checksum: "sha-" + in.PublishID, Action: models.DeployApply, WorkflowID: in.WorkflowID})
		return PreparedDeploy{Checksum: "sha-" + in.PublishID, CommandID: "cmd-" + models.DeployApply}, nil
	}, activity.RegisterOptions{Name: ActPrepareAndEnqueue})
	env.RegisterActivityWithOptions(func(_ context.Context, clusterID string) (ClusterPresence, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.presence++
		off := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		return ClusterPresence{ClusterID: clusterID, ClusterName: "kr-prod-1",
			Agents: []AgentPresence{{AgentID: "a1", Name: "edge-1", Status: models.AgentDisconnected, OfflineSince: &off}}}, nil
	}, activity.RegisterOptions{Name: ActClusterPresence})
	env.RegisterActivityWithOptions(func(_ context.Context, in FinishInput) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.finished = append(f.finished, in)
		return nil
	}, activity.RegisterOptions{Name: ActFinishPublish})
	env.RegisterActivityWithOptions(func(_ context.Context, in CancelDeployInput) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.cancelled = append(f.cancelled, in.WorkflowID)
		return nil
	}, activity.RegisterOptions{Name: ActCancelDeploy})
	env.RegisterActivityWithOptions(func(_ context.Context, in BeginWithdrawInput) (BeginWithdrawResult, error) {
		return BeginWithdrawResult{Revision: 3, Checksum: "sha-3"}, nil
	}, activity.RegisterOptions{Name: ActBeginWithdraw})
}

func newEnv(t *testing.T) (*testsuite.TestWorkflowEnvironment, *fakeActivities) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(clientStartOptions("publish/p1/1"))
	f := &fakeActivities{}
	f.register(env)
	return env, f
}

var in = PublishInput{PublishID: "p1", TenantID: "t1", ClusterID: "c1", ProductID: "pr1", Revision: 1, Actor: "owner@acme.test", Deadline: 24 * time.Hour}

func TestPublishSucceedsOnFirstResult(t *testing.T) {
	env, f := newEnv(t)
	env.RegisterDelayedCallback(func() {
		// While waiting, the query says what for: the cluster and the command. Presence is
		// the api's to read on demand (changeLeanStart): the run never looked.
		v, err := env.QueryWorkflow(QueryStatus)
		require.NoError(t, err)
		var st WaitState
		require.NoError(t, v.Get(&st))
		require.Equal(t, "waiting_for_result", st.Phase)
		require.Equal(t, "c1", st.ClusterID)
		require.Equal(t, "cmd-apply", st.CommandID)
		require.Empty(t, st.Presence.Agents)
		require.Zero(t, f.presence)
		// A late result of another command is not this run's answer.
		env.SignalWorkflow(SignalDeployResult, DeployResultSignal{CommandID: "old", AgentID: "a0", Status: "failed"})
	}, 2*time.Hour)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalDeployResult, DeployResultSignal{CommandID: "cmd-apply", AgentID: "a1", Status: "succeeded", Message: "ok"})
	}, 3*time.Hour)
	env.ExecuteWorkflow(PublishWorkflow, in)

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var out string
	require.NoError(t, env.GetWorkflowResult(&out))
	require.Equal(t, models.PublishPublished, out)
	require.Len(t, f.enqueued, 1)
	require.Equal(t, DeployCommandInput{PublishID: "p1", ClusterID: "c1", Revision: 1, Checksum: "sha-p1", Action: models.DeployApply, WorkflowID: "publish/p1/1"}, f.enqueued[0])
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishPublished, f.finished[0].Status)
	require.Equal(t, "a1", f.finished[0].AgentID)
	require.Zero(t, f.presence, "the api reads presence on demand")
}

// TestPublishShapeFromInput: a run started with its shape in the input takes changeLeanStart
// without asking GetVersion (no marker, no TemporalChangeVersion upsert per publish), even when
// the version would say otherwise; a run without one (started before the field) still asks.
func TestPublishShapeFromInput(t *testing.T) {
	for _, tc := range []struct {
		shape int
		asks  int
	}{{PublishShape, 0}, {0, 1}} {
		env, f := newEnv(t)
		asked := 0
		env.OnGetVersion(changeLeanStart, workflow.DefaultVersion, 1).Return(workflow.Version(1)).Run(func(mock.Arguments) { asked++ })
		env.RegisterDelayedCallback(func() {
			env.SignalWorkflow(SignalDeployResult, DeployResultSignal{CommandID: "cmd-apply", AgentID: "a1", Status: "succeeded"})
		}, time.Hour)
		in := in
		in.Shape = tc.shape
		env.ExecuteWorkflow(PublishWorkflow, in)
		require.NoError(t, env.GetWorkflowError())
		require.Equal(t, tc.asks, asked, "shape %d", tc.shape)
		require.Len(t, f.enqueued, 1)
		require.Zero(t, f.presence, "a lean run does not read presence")
		require.Len(t, f.finished, 1)
		require.Equal(t, models.PublishPublished, f.finished[0].Status)
	}
}

// TestPublishBeforeLeanStart: a run that began before changeLeanStart goes on as it began,
// freezing and queueing in two steps and reading presence once when the wait begins.
func TestPublishBeforeLeanStart(t *testing.T) {
	env, f := newEnv(t)
	env.OnGetVersion(changeLeanStart, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryStatus)
		require.NoError(t, err)
		var st WaitState
		require.NoError(t, v.Get(&st))
		require.Len(t, st.Presence.Agents, 1)
		env.SignalWorkflow(SignalDeployResult, DeployResultSignal{CommandID: "cmd-apply", AgentID: "a1", Status: "succeeded"})
	}, time.Hour)
	env.ExecuteWorkflow(PublishWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	require.Len(t, f.enqueued, 1)
	require.Equal(t, "sha-p1", f.enqueued[0].Checksum)
	require.Equal(t, 1, f.presence)
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishPublished, f.finished[0].Status)
}

func TestPublishFailsWithAgentMessage(t *testing.T) {
	env, f := newEnv(t)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalDeployResult, DeployResultSignal{CommandID: "cmd-apply", AgentID: "a1", Status: "failed", Message: "render: TCP listener"})
	}, time.Minute)
	env.ExecuteWorkflow(PublishWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishFailed, f.finished[0].Status)
	require.Equal(t, "render: TCP listener", f.finished[0].Reason)
}

func TestPublishDeadlineEndsInTimeout(t *testing.T) {
	env, f := newEnv(t)
	in := in
	in.Deadline = 6 * time.Hour
	env.ExecuteWorkflow(PublishWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishFailed, f.finished[0].Status)
	require.Equal(t, "timeout", f.finished[0].Reason)
}

func TestPublishValidationFailureSendsNothing(t *testing.T) {
	env, f := newEnv(t)
	f.prepareErr = temporal.NewNonRetryableApplicationError("cluster kr-prod-1 is in maintenance", ErrTypeValidation, nil)
	env.ExecuteWorkflow(PublishWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	require.Empty(t, f.enqueued)
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishFailed, f.finished[0].Status)
	require.Equal(t, "cluster kr-prod-1 is in maintenance", f.finished[0].Reason)
}

func TestPublishCancelledWritesNoStatus(t *testing.T) {
	env, f := newEnv(t)
	env.RegisterDelayedCallback(env.CancelWorkflow, time.Hour)
	env.ExecuteWorkflow(PublishWorkflow, in)
	err := env.GetWorkflowError()
	require.Error(t, err)
	var canceled *temporal.CanceledError
	require.True(t, errors.As(err, &canceled), "got %v", err)
	require.Len(t, f.finished, 1)
	require.Empty(t, f.finished[0].Status, "a withdraw owns the status now")
	require.Equal(t, models.PublishEventDeployCancelled, f.finished[0].Event)
}

func TestWithdrawCancelsDeployThenWithdraws(t *testing.T) {
	env, f := newEnv(t)
	env.SetStartWorkflowOptions(clientStartOptions("withdraw/p1/3"))
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalDeployResult, DeployResultSignal{CommandID: "cmd-withdraw", AgentID: "a1", Status: "succeeded"})
	}, time.Minute)
	env.ExecuteWorkflow(WithdrawWorkflow, WithdrawInput{PublishID: "p1", ClusterID: "c1", Revision: 3, Reason: "bye", Actor: "owner",
		Deadline: time.Hour, CancelWorkflowID: "publish/p1/4"})
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []string{"publish/p1/4"}, f.cancelled)
	require.Len(t, f.enqueued, 1)
	require.Equal(t, models.DeployWithdraw, f.enqueued[0].Action)
	require.Equal(t, 3, f.enqueued[0].Revision)
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishWithdrawn, f.finished[0].Status)
	require.Equal(t, "bye", f.finished[0].Reason)
}

func TestWorkflowIDs(t *testing.T) {
	require.Equal(t, "publish/p/12", PublishWorkflowID("p", 12))
	require.Equal(t, "withdraw/p/0", WithdrawWorkflowID("p", 0))
}

// TestPublishWaitsThirtyDaysInConstantHistory: a deploy to a cluster whose agents stay offline
// waits out a 30-day deadline (on the time-skipping test clock) and ends in timeout, and the
// run never looked at presence (runs before changePresenceOnDemand refreshed it every 30 s): a
// wait costs the same history events whatever its length, far below Temporal's limit.
func TestPublishWaitsThirtyDaysInConstantHistory(t *testing.T) {
	env, f := newEnv(t)
	in := in
	in.Deadline = 30 * 24 * time.Hour
	env.ExecuteWorkflow(PublishWorkflow, in)
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Len(t, f.finished, 1)
	require.Equal(t, models.PublishFailed, f.finished[0].Status)
	require.Equal(t, "timeout", f.finished[0].Reason)
	require.Zero(t, f.presence, "presence is the api's to read on demand, not refreshed 86,400 times")
}
