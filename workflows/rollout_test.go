package workflows

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/models"
)

// fakeRollout stands in for the rollout activities and the child publish runs: behaviour says
// per cluster how its publish ends (ok, fail, hang); a retried cluster uses then[cluster].
type fakeRollout struct {
	mu        sync.Mutex
	behaviour map[string]string
	claims    []ClaimRolloutClusterInput
	decisions []RolloutDecision
	revisions map[string]int
}

func (f *fakeRollout) register(env *testsuite.TestWorkflowEnvironment) {
	env.RegisterActivityWithOptions(func(_ context.Context, in ClaimRolloutClusterInput) (ClaimRolloutClusterResult, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.claims = append(f.claims, in)
		pid := "p-" + in.ClusterID
		f.revisions[pid]++
		rev := f.revisions[pid]
		run := &PublishInput{PublishID: pid, TenantID: "t1", ClusterID: in.ClusterID, ProductID: "pr1", Revision: rev, Actor: in.Actor, Deadline: in.Deadline}
		if in.Revert {
			run.RollbackOf = in.PreviousRevision
		}
		return ClaimRolloutClusterResult{WorkflowID: PublishWorkflowID(pid, rev), PublishID: pid, Revision: rev, PreviousRevision: rev - 1, Publish: run}, nil
	}, activity.RegisterOptions{Name: ActClaimRolloutCluster})
	env.RegisterActivityWithOptions(func(_ context.Context, in SaveRolloutInput) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if in.Decision != nil {
			f.decisions = append(f.decisions, *in.Decision)
		}
		return nil
	}, activity.RegisterOptions{Name: ActSaveRollout})
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in PublishInput) (string, error) {
		f.mu.Lock()
		b := f.behaviour[in.ClusterID]
		f.mu.Unlock()
		if in.RollbackOf > 0 {
			b = "ok"
		}
		switch b {
		case "fail":
			_ = workflow.Sleep(ctx, time.Minute)
			return models.PublishFailed, nil
		case "hang":
			_ = workflow.Sleep(ctx, 1000*time.Hour)
			return models.PublishFailed, nil
		}
		_ = workflow.Sleep(ctx, time.Minute)
		return models.PublishPublished, nil
	}, workflow.RegisterOptions{Name: "PublishWorkflow"})
}

func (f *fakeRollout) set(cluster, b string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.behaviour[cluster] = b
}

func (f *fakeRollout) claimed(cluster string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.claims {
		if c.ClusterID == cluster && !c.Revert {
			n++
		}
	}
	return n
}

func newRolloutEnv(t *testing.T, behaviour map[string]string) (*testsuite.TestWorkflowEnvironment, *fakeRollout) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(clientStartOptions("rollout/r1"))
	f := &fakeRollout{behaviour: behaviour, revisions: map[string]int{}}
	f.register(env)
	return env, f
}

func rolloutQuery(t *testing.T, env *testsuite.TestWorkflowEnvironment) RolloutState {
	t.Helper()
	v, err := env.QueryWorkflow(QueryStatus)
	require.NoError(t, err)
	var st RolloutState
	require.NoError(t, v.Get(&st))
	return st
}

func clusterState(st RolloutState, id string) RolloutClusterState {
	for _, c := range st.Clusters {
		if c.ClusterID == id {
			return c
		}
	}
	return RolloutClusterState{}
}

func cmd(actor, reason string) RolloutCommand {
	return RolloutCommand{Actor: actor, Reason: reason, Source: "rest"}
}

func twoWaves(gate string) RolloutInput {
	return RolloutInput{RolloutID: "r1", TenantID: "t1", ProductID: "pr1", Actor: "owner@acme.test",
		Waves: []RolloutWaveInput{{Clusters: []string{"c1"}, MaxConcurrency: 1, Gate: models.GateAuto},
			{Clusters: []string{"c2", "c3"}, MaxConcurrency: 2, Gate: gate}},
		MinSuccessTime: time.Hour, ProgressDeadline: 10 * time.Minute}
}

// Wave 1 deploys, soaks for an hour on a durable timer, then waits at wave 2's manual gate
// until approved; only then does wave 2 start.
func TestRolloutSoaksThenWaitsAtTheGate(t *testing.T) {
	env, f := newRolloutEnv(t, map[string]string{})
	env.RegisterDelayedCallback(func() {
		st := rolloutQuery(t, env)
		require.Equal(t, models.RolloutProgressing, st.Status)
		require.Equal(t, "soak", st.Waiting.For)
		require.NotNil(t, st.Waiting.Until)
		require.Equal(t, models.RolloutClusterSoaking, clusterState(st, "c1").State)
		require.Equal(t, 0, f.claimed("c2"), "wave 2 must not start during the soak")
	}, 30*time.Minute)
	env.RegisterDelayedCallback(func() {
		st := rolloutQuery(t, env)
		require.Equal(t, models.RolloutPaused, st.Status)
		require.Equal(t, models.PauseGate, st.PauseReason)
		require.Equal(t, "gate", st.Waiting.For)
		require.Equal(t, 1, st.Waiting.Wave)
		require.Equal(t, models.RolloutClusterSucceeded, clusterState(st, "c1").State)
		require.Equal(t, 0, f.claimed("c2"))
		env.SignalWorkflow(SignalRolloutResume, cmd("ops@acme.test", "not a gate verb"))
		env.SignalWorkflow(SignalRolloutApprove, cmd("ops@acme.test", "canary looks fine"))
	}, 3*time.Hour)
	env.ExecuteWorkflow(RolloutWorkflow, twoWaves(models.GateManual))
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var out string
	require.NoError(t, env.GetWorkflowResult(&out))
	require.Equal(t, models.RolloutSucceeded, out)
	st := rolloutQuery(t, env)
	for _, id := range []string{"c1", "c2", "c3"} {
		require.Equal(t, models.RolloutClusterSucceeded, clusterState(st, id).State, id)
		require.Equal(t, 1, clusterState(st, id).Revision)
	}
	require.Len(t, f.decisions, 2)
	require.False(t, f.decisions[0].Applied, "resume does not pass a gate")
	require.True(t, f.decisions[1].Applied)
	require.Equal(t, "ops@acme.test", f.decisions[1].Command.Actor)
	require.Equal(t, "canary looks fine", f.decisions[1].Command.Reason)
}

// A failure beyond max_failures pauses the rollout before the next cluster; retrying the
// failed cluster (now healthy) puts the budget back and the rollout goes on.
func TestRolloutPausesWhenTheBudgetIsSpentAndRetryResumes(t *testing.T) {
	env, f := newRolloutEnv(t, map[string]string{"c1": "fail"})
	in := RolloutInput{RolloutID: "r1", Actor: "owner@acme.test", ProgressDeadline: time.Hour,
		Waves: []RolloutWaveInput{{Clusters: []string{"c1", "c2", "c3"}, MaxConcurrency: 1, Gate: models.GateAuto}}}
	env.RegisterDelayedCallback(func() {
		st := rolloutQuery(t, env)
		require.Equal(t, models.RolloutPaused, st.Status)
		require.Equal(t, models.PauseFailureBudget, st.PauseReason)
		require.Equal(t, 1, st.Failures)
		require.Equal(t, 0, st.BudgetLeft)
		require.Equal(t, models.RolloutClusterFailed, clusterState(st, "c1").State)
		require.Equal(t, 0, f.claimed("c2"), "no deploy after the budget is spent")
		f.set("c1", "ok")
		env.SignalWorkflow(SignalRolloutRetry, RolloutCommand{Actor: "ops@acme.test", Reason: "fixed the backend", ClusterID: "c1"})
	}, 30*time.Minute)
	env.ExecuteWorkflow(RolloutWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	st := rolloutQuery(t, env)
	require.Equal(t, models.RolloutSucceeded, st.Status)
	require.Equal(t, 0, st.Failures)
	require.Equal(t, 2, clusterState(st, "c1").Attempts)
	require.Equal(t, 2, clusterState(st, "c1").Revision)
	require.Equal(t, models.RolloutClusterSucceeded, clusterState(st, "c2").State)
}

// A cluster whose publish never finishes is timed_out at its progress deadline, within the
// budget of one, and the rollout completes.
func TestRolloutTimesOutAClusterAtItsDeadline(t *testing.T) {
	env, _ := newRolloutEnv(t, map[string]string{"c2": "hang"})
	in := RolloutInput{RolloutID: "r1", Actor: "owner@acme.test", ProgressDeadline: 10 * time.Minute, MaxFailures: 1,
		Waves: []RolloutWaveInput{{Clusters: []string{"c1", "c2", "c3"}, MaxConcurrency: 3, Gate: models.GateAuto}}}
	env.ExecuteWorkflow(RolloutWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	st := rolloutQuery(t, env)
	require.Equal(t, models.RolloutSucceeded, st.Status)
	c2 := clusterState(st, "c2")
	require.Equal(t, models.RolloutClusterTimedOut, c2.State)
	require.Equal(t, c2.StartedAt.Add(10*time.Minute), *c2.DeadlineAt)
	require.Equal(t, *c2.DeadlineAt, *c2.FinishedAt, "timed out exactly at the deadline, not later")
	require.Equal(t, 1, st.Failures)
	require.Equal(t, 0, st.BudgetLeft)
}

// Abort at the gate rolls the cluster that took the new revision back to its previous one, as
// a new revision, and leaves the others untouched.
func TestRolloutAbortRollsBackWhatTookTheRevision(t *testing.T) {
	env, f := newRolloutEnv(t, map[string]string{})
	env.RegisterDelayedCallback(func() {
		require.Equal(t, models.PauseGate, rolloutQuery(t, env).PauseReason)
		env.SignalWorkflow(SignalRolloutAbort, cmd("owner@acme.test", "bad canary"))
	}, 3*time.Hour)
	env.ExecuteWorkflow(RolloutWorkflow, twoWaves(models.GateManual))
	require.NoError(t, env.GetWorkflowError())
	st := rolloutQuery(t, env)
	require.Equal(t, models.RolloutAborted, st.Status)
	c1 := clusterState(st, "c1")
	require.Equal(t, models.RolloutClusterRolledBack, c1.State)
	require.Equal(t, 2, c1.Revision, "the rollback is a new revision")
	require.Equal(t, models.RolloutClusterPending, clusterState(st, "c2").State)
	var reverts []ClaimRolloutClusterInput
	for _, c := range f.claims {
		if c.Revert {
			reverts = append(reverts, c)
		}
	}
	require.Len(t, reverts, 1)
	require.Equal(t, "c1", reverts[0].ClusterID)
	require.Equal(t, 0, reverts[0].PreviousRevision, "c1 served nothing before: its publish is withdrawn")
}

// A newer rollout's supersede stops this one cleanly: what is in flight finishes, nothing new
// starts, nothing is rolled back.
func TestRolloutIsSuperseded(t *testing.T) {
	env, f := newRolloutEnv(t, map[string]string{})
	in := RolloutInput{RolloutID: "r1", Actor: "owner@acme.test", ProgressDeadline: time.Hour,
		Waves: []RolloutWaveInput{{Clusters: []string{"c1", "c2"}, MaxConcurrency: 1, Gate: models.GateAuto}}}
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalRolloutSupersede, RolloutCommand{Actor: "owner@acme.test", Reason: "superseded by rollout r2", SupersededBy: "r2", Source: "workflow"})
	}, 30*time.Second)
	env.ExecuteWorkflow(RolloutWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	st := rolloutQuery(t, env)
	require.Equal(t, models.RolloutSuperseded, st.Status)
	require.Equal(t, "r2", st.SupersededBy)
	require.Equal(t, models.RolloutClusterSucceeded, clusterState(st, "c1").State, "the deploy in flight finished")
	require.Equal(t, models.RolloutClusterPending, clusterState(st, "c2").State)
	require.Equal(t, 0, f.claimed("c2"))
}

// Pause holds the next cluster until resume; a malformed command is ignored and audited.
func TestRolloutPauseResumeAndBadCommands(t *testing.T) {
	env, f := newRolloutEnv(t, map[string]string{})
	in := RolloutInput{RolloutID: "r1", Actor: "owner@acme.test", ProgressDeadline: time.Hour,
		Waves: []RolloutWaveInput{{Clusters: []string{"c1", "c2"}, MaxConcurrency: 1, Gate: models.GateAuto}}}
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalRolloutPause, cmd("ops@acme.test", "investigating"))
		env.SignalWorkflow(SignalRolloutApprove, json.RawMessage(`{"reason":"no actor"}`))
	}, 30*time.Second)
	env.RegisterDelayedCallback(func() {
		st := rolloutQuery(t, env)
		require.Equal(t, models.RolloutPaused, st.Status)
		require.Equal(t, models.PauseManual, st.PauseReason)
		require.Equal(t, 0, f.claimed("c2"))
		require.Equal(t, 1, st.Ignored)
		env.SignalWorkflow(SignalRolloutResume, cmd("ops@acme.test", "all clear"))
	}, 5*time.Hour)
	env.ExecuteWorkflow(RolloutWorkflow, in)
	require.NoError(t, env.GetWorkflowError())
	st := rolloutQuery(t, env)
	require.Equal(t, models.RolloutSucceeded, st.Status)
	require.True(t, clusterState(st, "c2").StartedAt.Sub(*clusterState(st, "c1").StartedAt) >= 5*time.Hour-time.Minute, fmt.Sprint(st.Clusters))
	require.Len(t, f.decisions, 3)
	require.Contains(t, f.decisions[1].Problem, "actor")
}
