package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/models"
)

// ErrTypeValidation marks an activity failure that retrying can't fix (the cluster went into
// maintenance, the product was archived): the run ends FAILED with its message.
const ErrTypeValidation = "validation"

// changePresenceOnDemand is the workflow.GetVersion change id of the wait without periodic
// presence refreshes.
const changePresenceOnDemand = "presence-on-demand"

// changeLeanStart is the workflow.GetVersion change id of the publish run that freezes the
// revision and queues its command in one local activity (ActPrepareAndEnqueue) and does not
// look at the cluster's presence when it starts waiting (the api reads presence on demand for
// the status, since changePresenceOnDemand): one local activity and one transaction per
// publish where there were three and three. A run of this version never asks for
// changePresenceOnDemand, which it implies. Runs started with PublishShapeLeanStart in their
// input take it without asking.
const changeLeanStart = "lean-start"

// presenceRefresh is how often a waiting run (before changePresenceOnDemand) looks at the target cluster's agents again, so
// the status query can say which are offline and since when without touching the database.
const presenceRefresh = 30 * time.Second

// localActivities runs the short database and outbox steps as local activities: they execute
// in the worker that runs the workflow task, recorded as markers, without a round trip through
// a task queue each. A publish has five such steps; as regular activities they dominated its
// latency on the dev server (about 40 ms per hand-off). Infrastructure failures are retried
// with backoff for as long as the run lives, validation failures never.
func localActivities(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			NonRetryableErrorTypes: []string{ErrTypeValidation},
		},
	})
}

// activityOptions: database and outbox steps are short; infrastructure failures (Postgres
// restarting) are retried with backoff for as long as the run lives, validation failures never.
func activityOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			NonRetryableErrorTypes: []string{ErrTypeValidation},
		},
	})
}

// PublishWorkflow deploys one revision of a product publish to its cluster:
// validate and freeze the revision snapshot (status DEPLOYING) -> hand a DeployCommand to the
// agent outbox -> wait, however long the agents are offline, for the first DeployResult or the
// deadline -> PUBLISHED or FAILED. Withdrawing while it waits cancels it.
func PublishWorkflow(ctx workflow.Context, in PublishInput) (string, error) {
	wid := workflow.GetInfo(ctx).WorkflowExecution.ID
	state := &WaitState{Phase: "preparing", Action: models.DeployApply, PublishID: in.PublishID, Revision: in.Revision, ClusterID: in.ClusterID}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (WaitState, error) { return *state, nil }); err != nil {
		return "", err
	}
	actx := localActivities(ctx)
	fail := func(err error) (string, error) {
		return finish(ctx, state, FinishInput{PublishID: in.PublishID, Revision: in.Revision, WorkflowID: wid,
			Status: models.PublishFailed, Reason: failureMessage(err), Event: models.PublishEventFailed, Actor: in.Actor})
	}

	var cmd DeployCommandResult
	// A run started with its shape in the input makes no GetVersion call (see PublishInput.Shape).
	lean := in.Shape >= PublishShapeLeanStart || workflow.GetVersion(ctx, changeLeanStart, workflow.DefaultVersion, 1) >= 1
	if lean {
		var prepared PreparedDeploy
		if err := workflow.ExecuteLocalActivity(actx, ActPrepareAndEnqueue, PrepareInput{PublishInput: in, WorkflowID: wid}).Get(ctx, &prepared); err != nil {
			return fail(err)
		}
		cmd.CommandID = prepared.CommandID
	} else {
		var prep PrepareResult
		if err := workflow.ExecuteLocalActivity(actx, ActPreparePublish, PrepareInput{PublishInput: in, WorkflowID: wid}).Get(ctx, &prep); err != nil {
			return fail(err)
		}
		if err := workflow.ExecuteLocalActivity(actx, ActEnqueueDeploy, DeployCommandInput{PublishID: in.PublishID, ClusterID: in.ClusterID,
			Revision: in.Revision, Checksum: prep.Checksum, Action: models.DeployApply, WorkflowID: wid}).Get(ctx, &cmd); err != nil {
			return fail(err)
		}
	}

	res, outcome, err := waitForResult(ctx, state, in.ClusterID, cmd.CommandID, in.Deadline, lean)
	if err != nil {
		// Cancelled (a withdraw took over): record it, write no status; the withdraw run owns it.
		return finish(ctx, state, FinishInput{PublishID: in.PublishID, Revision: in.Revision, WorkflowID: wid,
			Event: models.PublishEventDeployCancelled, Reason: "the deploy was cancelled", Actor: in.Actor})
	}
	return conclude(ctx, state, FinishInput{PublishID: in.PublishID, Revision: in.Revision, WorkflowID: wid, Actor: in.Actor},
		res, outcome, models.PublishPublished, models.PublishEventPublished, "", "no agent of the cluster reported a result before the deadline")
}

// WithdrawWorkflow removes a publish from its cluster: cancel a deploy still in flight ->
// WITHDRAWING -> a withdraw DeployCommand -> wait for the first result or the deadline ->
// WITHDRAWN (or FAILED with the agent's message or `timeout`).
func WithdrawWorkflow(ctx workflow.Context, in WithdrawInput) (string, error) {
	wid := workflow.GetInfo(ctx).WorkflowExecution.ID
	state := &WaitState{Phase: "preparing", Action: models.DeployWithdraw, PublishID: in.PublishID, Revision: in.Revision, ClusterID: in.ClusterID}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (WaitState, error) { return *state, nil }); err != nil {
		return "", err
	}
	actx := localActivities(ctx)

	if in.CancelWorkflowID != "" {
		// Cancelling waits until the deploy run has closed, so it can't write a status after us.
		cctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: 2 * time.Minute, HeartbeatTimeout: 20 * time.Second,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second},
		})
		if err := workflow.ExecuteActivity(cctx, ActCancelDeploy, CancelDeployInput{WorkflowID: in.CancelWorkflowID}).Get(ctx, nil); err != nil {
			return finish(ctx, state, FinishInput{PublishID: in.PublishID, Revision: in.Revision, WorkflowID: wid,
				Status: models.PublishFailed, Reason: failureMessage(err), Event: models.PublishEventFailed, Actor: in.Actor})
		}
	}

	var begun BeginWithdrawResult
	if err := workflow.ExecuteLocalActivity(actx, ActBeginWithdraw, BeginWithdrawInput{PublishID: in.PublishID, WorkflowID: wid,
		Reason: in.Reason, Actor: in.Actor}).Get(ctx, &begun); err != nil {
		return finish(ctx, state, FinishInput{PublishID: in.PublishID, Revision: in.Revision, WorkflowID: wid,
			Status: models.PublishFailed, Reason: failureMessage(err), Event: models.PublishEventFailed, Actor: in.Actor})
	}
	state.Revision = begun.Revision

	var cmd DeployCommandResult
	if err := workflow.ExecuteLocalActivity(actx, ActEnqueueDeploy, DeployCommandInput{PublishID: in.PublishID, ClusterID: in.ClusterID,
		Revision: begun.Revision, Checksum: begun.Checksum, Action: models.DeployWithdraw, WorkflowID: wid}).Get(ctx, &cmd); err != nil {
		return finish(ctx, state, FinishInput{PublishID: in.PublishID, Revision: begun.Revision, WorkflowID: wid,
			Status: models.PublishFailed, Reason: failureMessage(err), Event: models.PublishEventFailed, Actor: in.Actor})
	}

	res, outcome, err := waitForResult(ctx, state, in.ClusterID, cmd.CommandID, in.Deadline, false)
	if err != nil {
		return finish(ctx, state, FinishInput{PublishID: in.PublishID, Revision: begun.Revision, WorkflowID: wid,
			Event: models.PublishEventDeployCancelled, Reason: "the withdraw was cancelled", Actor: in.Actor})
	}
	return conclude(ctx, state, FinishInput{PublishID: in.PublishID, Revision: begun.Revision, WorkflowID: wid, Actor: in.Actor},
		res, outcome, models.PublishWithdrawn, models.PublishEventWithdrawn, in.Reason, "no agent of the cluster confirmed the withdraw before the deadline")
}

// waitForResult waits for the first DeployResult of command, the deadline, or cancellation.
// Unless lean (changeLeanStart), it first reads the cluster's agent presence for the status
// query, and runs from before changePresenceOnDemand refresh it while they wait. The outcome
// is succeeded, failed or timeout; a cancelled run returns the context's error.
func waitForResult(ctx workflow.Context, state *WaitState, clusterID, commandID string, deadline time.Duration, lean bool) (DeployResultSignal, string, error) {
	if deadline <= 0 {
		deadline = 24 * time.Hour
	}
	now := workflow.Now(ctx)
	state.Phase, state.CommandID, state.WaitingSince, state.Deadline = "waiting_for_result", commandID, now, now.Add(deadline)

	// Presence is informational: a failing refresh must never end or stall the run.
	pctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
	})
	refresh := func() {
		var p ClusterPresence
		if err := workflow.ExecuteLocalActivity(pctx, ActClusterPresence, clusterID).Get(ctx, &p); err == nil {
			state.Presence = p
		}
	}
	if !lean {
		refresh()
	}

	timerCtx, cancelTimers := workflow.WithCancel(ctx)
	defer cancelTimers()
	deadlineTimer := workflow.NewTimer(timerCtx, deadline)
	// Runs from before version 1 refreshed presence every presenceRefresh, some six history
	// events each: a wait for an offline cluster hit Temporal's history limit in about three
	// days. Since version 1 the api reads presence on demand for the status, and a wait costs
	// a constant number of events whatever its deadline (30 days included).
	var refreshTimer workflow.Future
	if !lean && workflow.GetVersion(ctx, changePresenceOnDemand, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		refreshTimer = workflow.NewTimer(timerCtx, presenceRefresh)
	}
	results := workflow.GetSignalChannel(ctx, SignalDeployResult)
	for {
		var (
			res                                  DeployResultSignal
			got, timedOut, refreshDue, cancelled bool
		)
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(results, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, &res); got = true })
		sel.AddFuture(deadlineTimer, func(workflow.Future) { timedOut = true })
		if refreshTimer != nil {
			sel.AddFuture(refreshTimer, func(workflow.Future) { refreshDue = true })
		}
		sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) { cancelled = true })
		sel.Select(ctx)
		switch {
		case cancelled:
			return res, "", ctx.Err()
		case got:
			if res.CommandID != commandID {
				continue // a late result of an earlier command (the sweeper re-sends): not ours
			}
			state.Results = append(state.Results, res)
			if res.Status == "succeeded" {
				return res, "succeeded", nil
			}
			return res, "failed", nil
		case timedOut:
			return res, "timeout", nil
		case refreshDue:
			refresh()
			refreshTimer = workflow.NewTimer(timerCtx, presenceRefresh)
		}
	}
}

// conclude finishes a run from the outcome of its wait: the first agent's success writes
// success (with event and reason), its failure FAILED with the agent's message, the deadline
// FAILED with reason timeout.
func conclude(ctx workflow.Context, state *WaitState, base FinishInput, res DeployResultSignal, outcome, success, event, reason, timeoutMsg string) (string, error) {
	switch outcome {
	case "timeout":
		base.Status, base.Reason, base.Event, base.Message = models.PublishFailed, "timeout", models.PublishEventFailed, timeoutMsg
	case "succeeded":
		base.Status, base.Reason, base.Event, base.Message, base.AgentID = success, reason, event, res.Message, res.AgentID
	default:
		base.Status, base.Reason, base.Event, base.Message, base.AgentID = models.PublishFailed, res.Message, models.PublishEventFailed, res.Message, res.AgentID
	}
	return finish(ctx, state, base)
}

// finish records the outcome through an activity that survives cancellation of the run.
func finish(ctx workflow.Context, state *WaitState, in FinishInput) (string, error) {
	state.Phase = "finishing"
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	if err := workflow.ExecuteLocalActivity(localActivities(dctx), ActFinishPublish, in).Get(dctx, nil); err != nil {
		return "", err
	}
	state.Phase, state.Outcome = "done", in.Status
	if in.Status == "" {
		if ctx.Err() != nil {
			return "", temporal.NewCanceledError(in.Reason)
		}
		return "cancelled", nil
	}
	return in.Status, nil
}

func failureMessage(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Message()
	}
	return err.Error()
}
