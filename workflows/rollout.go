package workflows

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/models"
)

// busyRetry is how long a cluster whose publish another run holds waits before asking again
// (bounded by the cluster's progress deadline).
const busyRetry = 10 * time.Second

// defaultProgressDeadline bounds a cluster's deploy when the input names none: never forever.
const defaultProgressDeadline = 30 * time.Minute

// RolloutWorkflow deploys one product to many clusters in ordered waves, one child publish run
// per cluster: for each wave, wait at its gate when it is manual -> deploy its clusters, at most
// max_concurrency at once, each within its progress deadline -> count failures against the
// budget, pausing when it is spent -> soak for min_success_time -> next wave. pause, resume,
// approve, abort and retry arrive as signals (REST and the Temporal CLI alike) and go through
// decide(); abort waits for the deploys in flight and rolls every cluster that took the new
// revision back to its previous one. A newer rollout of the product supersedes this one.
func RolloutWorkflow(ctx workflow.Context, in RolloutInput) (string, error) {
	r := newRolloutRun(ctx, in)
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (RolloutState, error) { return r.st, nil }); err != nil {
		return "", err
	}
	for _, old := range in.Supersede {
		// The older run may have ended meanwhile: nothing to supersede then.
		_ = workflow.SignalExternalWorkflow(ctx, RolloutWorkflowID(old), "", SignalRolloutSupersede,
			RolloutCommand{Actor: in.Actor, Reason: "superseded by rollout " + in.RolloutID, Source: "workflow", SupersededBy: in.RolloutID}).Get(ctx, nil)
	}
	r.save(nil, r.allClusters()...)
	for w := range in.Waves {
		if r.stopping() {
			break
		}
		r.st.Wave = w
		if in.Waves[w].Gate == models.GateManual {
			r.pause(models.PauseGate, RolloutWaitingState{For: "gate", Wave: w})
			r.waitWhilePaused()
		}
		r.runWave(w)
		if r.stopping() {
			break
		}
		r.soak(w)
	}
	r.drainRetries()
	return r.conclude(), nil
}

// rolloutRun is the state of one run and the coroutines it drives.
type rolloutRun struct {
	ctx       workflow.Context
	in        RolloutInput
	st        RolloutState
	done      workflow.Channel // clusterEvents from the deploy coroutines
	inflight  int
	retries   []int // clusters queued again by retry
	allowance int   // failures a resume accepted beyond max_failures
	stop      string
}

// clusterEvent is what a deploy coroutine reports: it claimed a run, or it ended.
type clusterEvent struct {
	Index   int
	Revert  bool
	Claimed *ClaimRolloutClusterResult
	State   string // the cluster's final state; empty with Claimed
	Message string
}

func newRolloutRun(ctx workflow.Context, in RolloutInput) *rolloutRun {
	if in.ProgressDeadline <= 0 {
		in.ProgressDeadline = defaultProgressDeadline
	}
	r := &rolloutRun{ctx: ctx, in: in, done: workflow.NewChannel(ctx)}
	r.st = RolloutState{Status: models.RolloutProgressing, MaxFailures: in.MaxFailures, BudgetLeft: in.MaxFailures}
	for w, wave := range in.Waves {
		for _, id := range wave.Clusters {
			r.st.Clusters = append(r.st.Clusters, RolloutClusterState{ClusterID: id, Wave: w, State: models.RolloutClusterPending})
		}
	}
	return r
}

func (r *rolloutRun) allClusters() []int {
	out := make([]int, len(r.st.Clusters))
	for i := range out {
		out[i] = i
	}
	return out
}

func (r *rolloutRun) stopping() bool { return r.stop != "" }

// runWave deploys the pending clusters of wave w until every one has ended and no retry is
// queued, launching only while the rollout progresses.
func (r *rolloutRun) runWave(w int) {
	var queue []int
	for i, c := range r.st.Clusters {
		if c.Wave == w && c.State == models.RolloutClusterPending {
			queue = append(queue, i)
		}
	}
	limit := r.in.Waves[w].MaxConcurrency
	if limit <= 0 {
		limit = len(queue) + 1
	}
	r.setWaiting(RolloutWaitingState{For: "deployments", Wave: w})
	for {
		for r.st.Status == models.RolloutProgressing && !r.stopping() && r.inflight < limit && len(r.retries)+len(queue) > 0 {
			if len(r.retries) > 0 {
				r.launch(r.retries[0], false)
				r.retries = r.retries[1:]
				continue
			}
			r.launch(queue[0], false)
			queue = queue[1:]
		}
		if r.inflight == 0 && (r.stopping() || len(queue)+len(r.retries) == 0) {
			if r.st.Status != models.RolloutPaused || r.stopping() {
				return
			}
		}
		r.step(nil)
	}
}

// drainRetries runs what retry queued after the last wave, and waits while a spent budget
// holds the rollout.
func (r *rolloutRun) drainRetries() {
	for !r.stopping() && (len(r.retries) > 0 || r.st.Status == models.RolloutPaused) {
		if r.st.Status == models.RolloutPaused {
			r.waitWhilePaused()
			continue
		}
		for r.st.Status == models.RolloutProgressing && len(r.retries) > 0 {
			r.launch(r.retries[0], false)
			r.retries = r.retries[1:]
		}
		for r.inflight > 0 {
			r.step(nil)
		}
	}
}

// soak holds the clusters of wave w that succeeded for min_success_time on a durable timer,
// then marks them succeeded. A pause during the soak holds the next wave until resumed.
func (r *rolloutRun) soak(w int) {
	if r.in.MinSuccessTime > 0 {
		until := workflow.Now(r.ctx).Add(r.in.MinSuccessTime)
		var changed []int
		for i := range r.st.Clusters {
			if c := &r.st.Clusters[i]; c.Wave == w && c.State == models.RolloutClusterSucceeded {
				c.State = models.RolloutClusterSoaking
				changed = append(changed, i)
			}
		}
		r.st.Waiting = RolloutWaitingState{For: "soak", Wave: w, Until: &until}
		r.save(nil, changed...)
		tctx, cancel := workflow.WithCancel(r.ctx)
		timer := workflow.NewTimer(tctx, r.in.MinSuccessTime)
		for !r.stopping() && !r.step(timer) {
		}
		cancel()
		if r.stopping() {
			return
		}
		now := workflow.Now(r.ctx)
		for _, i := range changed {
			if c := &r.st.Clusters[i]; c.State == models.RolloutClusterSoaking {
				c.State, c.FinishedAt = models.RolloutClusterSucceeded, &now
			}
		}
		r.st.Waiting = RolloutWaitingState{}
		r.save(nil, changed...)
	}
	r.waitWhilePaused()
}

func (r *rolloutRun) waitWhilePaused() {
	for r.st.Status == models.RolloutPaused && !r.stopping() {
		r.step(nil)
	}
}

func (r *rolloutRun) pause(reason string, waiting RolloutWaitingState) {
	r.st.Status, r.st.PauseReason, r.st.Waiting = models.RolloutPaused, reason, waiting
	r.save(nil)
}

func (r *rolloutRun) setWaiting(w RolloutWaitingState) {
	if r.st.Status == models.RolloutProgressing {
		r.st.Waiting = w
		r.save(nil)
	}
}

// step waits for one thing: a command, a cluster's event, or timer (true when it fired).
func (r *rolloutRun) step(timer workflow.Future) (fired bool) {
	sel := workflow.NewSelector(r.ctx)
	for _, name := range append(append([]string{}, RolloutVerbs...), SignalRolloutSupersede) {
		sel.AddReceive(workflow.GetSignalChannel(r.ctx, name), func(c workflow.ReceiveChannel, _ bool) {
			var raw json.RawMessage
			c.Receive(r.ctx, &raw)
			r.decide(name, raw)
		})
	}
	sel.AddReceive(r.done, func(c workflow.ReceiveChannel, _ bool) {
		var ev clusterEvent
		c.Receive(r.ctx, &ev)
		r.onEvent(ev)
	})
	if timer != nil {
		sel.AddFuture(timer, func(workflow.Future) { fired = true })
	}
	sel.Select(r.ctx)
	return fired
}

// onEvent applies a deploy coroutine's report and spends the failure budget.
func (r *rolloutRun) onEvent(ev clusterEvent) {
	c := &r.st.Clusters[ev.Index]
	if ev.Claimed != nil {
		c.PublishID, c.Revision = ev.Claimed.PublishID, ev.Claimed.Revision
		if !ev.Revert {
			c.PreviousRevision = ev.Claimed.PreviousRevision
		}
		r.save(nil, ev.Index)
		return
	}
	r.inflight--
	now := workflow.Now(r.ctx)
	c.State, c.Message, c.FinishedAt = ev.State, ev.Message, &now
	if ev.State == models.RolloutClusterFailed || ev.State == models.RolloutClusterTimedOut {
		if !ev.Revert {
			r.st.Failures++
		}
	}
	r.updateBudget()
	if !ev.Revert && r.st.Status == models.RolloutProgressing && r.st.Failures > r.in.MaxFailures+r.allowance {
		r.st.Status, r.st.PauseReason = models.RolloutPaused, models.PauseFailureBudget
		r.st.Waiting = RolloutWaitingState{For: "resume", Wave: r.st.Wave}
		r.st.Reason = fmt.Sprintf("%d clusters failed; the failure budget allows %d", r.st.Failures, r.in.MaxFailures+r.allowance)
	}
	r.save(nil, ev.Index)
}

func (r *rolloutRun) updateBudget() {
	r.st.BudgetLeft = r.in.MaxFailures + r.allowance - r.st.Failures
	if r.st.BudgetLeft < 0 {
		r.st.BudgetLeft = 0
	}
}

// save writes the state and the clusters at idx (and a decision's audit row) through a local
// activity that is retried until it succeeds: the row must follow the run.
func (r *rolloutRun) save(d *RolloutDecision, idx ...int) {
	st := r.st
	st.Clusters = make([]RolloutClusterState, 0, len(idx))
	for _, i := range idx {
		st.Clusters = append(st.Clusters, r.st.Clusters[i])
	}
	_ = workflow.ExecuteLocalActivity(localActivities(r.ctx), ActSaveRollout, SaveRolloutInput{RolloutID: r.in.RolloutID, State: st, Decision: d}).Get(r.ctx, nil)
}

// launch starts the deploy (or, revert, the rollback) of cluster i in a coroutine.
func (r *rolloutRun) launch(i int, revert bool) {
	c := &r.st.Clusters[i]
	now := workflow.Now(r.ctx)
	deadline := now.Add(r.in.ProgressDeadline)
	r.inflight++
	if !revert {
		c.State, c.Attempts, c.Message = models.RolloutClusterDeploying, c.Attempts+1, ""
		c.StartedAt, c.DeadlineAt, c.FinishedAt = &now, &deadline, nil
	} else {
		c.Message, c.DeadlineAt = fmt.Sprintf("rolling back to revision %d", c.PreviousRevision), &deadline
	}
	r.save(nil, i)
	in := ClaimRolloutClusterInput{RolloutID: r.in.RolloutID, ClusterID: c.ClusterID, Actor: r.in.Actor, Revert: revert,
		PublishID: c.PublishID, PreviousRevision: c.PreviousRevision, Deadline: r.in.ProgressDeadline}
	workflow.Go(r.ctx, func(ctx workflow.Context) {
		ev := r.deployOne(ctx, i, in)
		ev.Index, ev.Revert = i, revert
		r.done.Send(ctx, ev)
	})
}

// deployOne claims the cluster's publish (waiting while another run holds it), runs the claimed
// publish (or withdraw) as a child and reports how it ended, or timed_out at the deadline.
func (r *rolloutRun) deployOne(ctx workflow.Context, i int, in ClaimRolloutClusterInput) clusterEvent {
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	deadline := workflow.NewTimer(tctx, in.Deadline)
	success, okMsg := models.RolloutClusterSucceeded, "the publish reached PUBLISHED"
	if in.Revert {
		success, okMsg = models.RolloutClusterRolledBack, fmt.Sprintf("rolled back to revision %d", in.PreviousRevision)
	}
	var claim ClaimRolloutClusterResult
	for {
		if err := workflow.ExecuteLocalActivity(localActivities(ctx), ActClaimRolloutCluster, in).Get(ctx, &claim); err != nil {
			return clusterEvent{State: models.RolloutClusterFailed, Message: failureMessage(err)}
		}
		if !claim.Busy {
			break
		}
		wait := workflow.NewTimer(tctx, busyRetry)
		timedOut := false
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(wait, func(workflow.Future) {})
		sel.AddFuture(deadline, func(workflow.Future) { timedOut = true })
		sel.Select(ctx)
		if timedOut {
			return clusterEvent{State: models.RolloutClusterTimedOut, Message: "another run held the cluster's publish until the progress deadline"}
		}
	}
	r.done.Send(ctx, clusterEvent{Index: i, Revert: in.Revert, Claimed: &claim})

	child := workflow.ExecuteChildWorkflow(r.childOptions(ctx, claim), childWorkflow(claim), childInput(claim))
	var status string
	var childErr error
	timedOut := false
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(child, func(f workflow.Future) { childErr = f.Get(ctx, &status) })
	sel.AddFuture(deadline, func(workflow.Future) { timedOut = true })
	sel.Select(ctx)
	switch {
	case timedOut:
		return clusterEvent{State: models.RolloutClusterTimedOut, Message: "the publish did not finish before the progress deadline"}
	case childErr != nil:
		return clusterEvent{State: models.RolloutClusterFailed, Message: failureMessage(childErr)}
	case status == models.PublishPublished || (in.Revert && status == models.PublishWithdrawn):
		// Where per-agent applied state lands, this is the place to wait for it too.
		return clusterEvent{State: success, Message: okMsg}
	default:
		msg := fmt.Sprintf("the publish run %s ended %s", claim.WorkflowID, status)
		if in.Revert {
			msg = "rollback failed: " + msg
		}
		return clusterEvent{State: models.RolloutClusterFailed, Message: msg}
	}
}

// childOptions: the child keeps its publish id, so a REST view of the publish shows it; it is
// abandoned, never killed, when the rollout ends, because a publish run always finishes itself.
func (r *rolloutRun) childOptions(ctx workflow.Context, claim ClaimRolloutClusterResult) workflow.Context {
	var tenant, cluster, product string
	if claim.Publish != nil {
		tenant, cluster, product = claim.Publish.TenantID, claim.Publish.ClusterID, claim.Publish.ProductID
	} else if claim.Withdraw != nil {
		tenant, cluster, product = claim.Withdraw.TenantID, claim.Withdraw.ClusterID, claim.Withdraw.ProductID
	}
	return workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            claim.WorkflowID,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(SATenantID).ValueSet(tenant),
			temporal.NewSearchAttributeKeyKeyword(SAClusterID).ValueSet(cluster),
			temporal.NewSearchAttributeKeyKeyword(SAProductID).ValueSet(product),
			temporal.NewSearchAttributeKeyKeyword(SAPublishID).ValueSet(claim.PublishID),
			temporal.NewSearchAttributeKeyKeyword(SARolloutID).ValueSet(r.in.RolloutID),
		),
	})
}

func childWorkflow(c ClaimRolloutClusterResult) any {
	if c.Withdraw != nil {
		return WithdrawWorkflow
	}
	return PublishWorkflow
}

func childInput(c ClaimRolloutClusterResult) any {
	if c.Withdraw != nil {
		return *c.Withdraw
	}
	return *c.Publish
}

// conclude ends the run: an abort rolls back, a supersede just stops, else it succeeded.
func (r *rolloutRun) conclude() string {
	for r.inflight > 0 {
		r.step(nil)
	}
	switch r.stop {
	case models.RolloutSuperseded:
		r.st.Status, r.st.PauseReason, r.st.Waiting = models.RolloutSuperseded, "", RolloutWaitingState{}
	case models.RolloutAborted:
		r.revert()
		r.st.Status, r.st.PauseReason, r.st.Waiting = models.RolloutAborted, "", RolloutWaitingState{}
	default:
		r.st.Status, r.st.PauseReason, r.st.Waiting = models.RolloutSucceeded, "", RolloutWaitingState{}
		r.st.Reason = fmt.Sprintf("every wave done; %d of %d clusters failed (budget %d)", r.st.Failures, len(r.st.Clusters), r.in.MaxFailures+r.allowance)
	}
	r.save(nil)
	return r.st.Status
}

// revert rolls every cluster that took the new revision back, as many at once as the widest
// wave allows.
func (r *rolloutRun) revert() {
	limit := 1
	for _, w := range r.in.Waves {
		if w.MaxConcurrency > limit {
			limit = w.MaxConcurrency
		}
	}
	var queue []int
	for i, c := range r.st.Clusters {
		if c.State == models.RolloutClusterSucceeded || c.State == models.RolloutClusterSoaking {
			queue = append(queue, i)
		}
	}
	r.st.Waiting = RolloutWaitingState{For: "rollbacks", Wave: r.st.Wave}
	r.save(nil)
	for len(queue) > 0 || r.inflight > 0 {
		for r.inflight < limit && len(queue) > 0 {
			r.launch(queue[0], true)
			queue = queue[1:]
		}
		r.step(nil)
	}
}

// decide is the one handler of every command, from REST or the Temporal CLI: it applies what
// the current state allows and audits the command, applied or not, with its actor and reason.
func (r *rolloutRun) decide(verb string, raw json.RawMessage) {
	cmd, err := parseRolloutCommand(raw)
	d := &RolloutDecision{Verb: verb, Command: cmd, Before: r.st.Status}
	switch {
	case err != nil:
		d.Problem = err.Error()
	case r.stopping():
		d.Problem = "the rollout is already " + r.stop + "ing"
	default:
		d.Problem = r.apply(verb, cmd)
	}
	d.Applied = d.Problem == ""
	if !d.Applied {
		r.st.Ignored++
	}
	var changed []int
	if d.Applied && verb == SignalRolloutRetry {
		changed = []int{r.retries[len(r.retries)-1]}
	}
	r.save(d, changed...)
}

// apply changes the state for one well-formed command, or says why it can't.
func (r *rolloutRun) apply(verb string, cmd RolloutCommand) string {
	s := &r.st
	switch verb {
	case SignalRolloutPause:
		if s.Status != models.RolloutProgressing {
			return "only a progressing rollout can be paused"
		}
		s.Status, s.PauseReason, s.Waiting = models.RolloutPaused, models.PauseManual, RolloutWaitingState{For: "resume", Wave: s.Wave}
	case SignalRolloutResume:
		if s.Status != models.RolloutPaused || s.PauseReason == models.PauseGate {
			return "only a rollout paused by hand or by its failure budget can be resumed (a gate is approved)"
		}
		if s.PauseReason == models.PauseFailureBudget {
			r.allowance = s.Failures - r.in.MaxFailures
			r.updateBudget()
		}
		s.Status, s.PauseReason, s.Waiting = models.RolloutProgressing, "", RolloutWaitingState{}
	case SignalRolloutApprove:
		if s.Status != models.RolloutPaused || s.PauseReason != models.PauseGate {
			return "the rollout is not waiting at a gate"
		}
		s.Status, s.PauseReason, s.Waiting = models.RolloutProgressing, "", RolloutWaitingState{}
	case SignalRolloutAbort:
		r.stop, s.Status, s.PauseReason = models.RolloutAborted, models.RolloutAborting, ""
		s.Waiting, s.Reason = RolloutWaitingState{For: "deployments", Wave: s.Wave}, "aborted by "+cmd.Actor+": "+cmd.Reason
	case SignalRolloutSupersede:
		r.stop, s.SupersededBy, s.Reason = models.RolloutSuperseded, cmd.SupersededBy, cmd.Reason
	case SignalRolloutRetry:
		return r.retry(cmd.ClusterID)
	}
	return ""
}

// retry queues one failed cluster again; its failure no longer counts, and a rollout held only
// by its failure budget goes on once the budget holds again.
func (r *rolloutRun) retry(clusterID string) string {
	for i := range r.st.Clusters {
		c := &r.st.Clusters[i]
		if c.ClusterID != clusterID {
			continue
		}
		if c.State != models.RolloutClusterFailed && c.State != models.RolloutClusterTimedOut {
			return "cluster " + clusterID + " is " + c.State + ", not failed"
		}
		if c.Wave > r.st.Wave {
			return "cluster " + clusterID + " is in a wave that has not started"
		}
		c.State, c.Message = models.RolloutClusterPending, "retry queued"
		r.st.Failures--
		r.updateBudget()
		r.retries = append(r.retries, i)
		if r.st.Status == models.RolloutPaused && r.st.PauseReason == models.PauseFailureBudget && r.st.Failures <= r.in.MaxFailures+r.allowance {
			r.st.Status, r.st.PauseReason, r.st.Waiting = models.RolloutProgressing, "", RolloutWaitingState{}
		}
		return ""
	}
	return "cluster " + clusterID + " is not a target of the rollout"
}

// parseRolloutCommand decodes a command strictly: a JSON object with an actor and only the
// known fields.
func parseRolloutCommand(raw json.RawMessage) (RolloutCommand, error) {
	var c RolloutCommand
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("payload is not a command {actor, reason, cluster_id}: %v", err)
	}
	c.Actor = strings.TrimSpace(c.Actor)
	if c.Actor == "" || len(c.Actor) > 320 || len(c.Reason) > 1000 {
		return c, fmt.Errorf("a command needs an actor (at most 320 characters) and a reason of at most 1000")
	}
	if c.Source == "" {
		c.Source = "temporal-cli"
	}
	return c, nil
}
