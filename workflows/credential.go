package workflows

import (
	"slices"
	"time"

	"go.temporal.io/sdk/workflow"
)

// credentialRecheck is how often a rollout checks whether a newer version replaced it.
const credentialRecheck = time.Minute

// versionBatchedConfirm changed CredentialSyncWorkflow: planning and confirming run as local
// activities, and the acknowledgements that have arrived are confirmed together in one step
// instead of one activity each (a credential for 100 clusters took 100 sequential activities,
// about ten seconds). Runs started before keep the old steps on replay.
const versionBatchedConfirm = "credential-sync-batched-confirm"

// CredentialSyncWorkflow rolls one version of a credential out to every cluster where it must
// be present (upsert: the hash, prefix, app, allowed publishes and plan limits) or absent
// (revoke), and waits until every target cluster has acknowledged. Stragglers stay visible in
// the status query and in the credential's rollout rows; nothing is dropped. A newer version
// of the credential replaces the rollout of this one.
func CredentialSyncWorkflow(ctx workflow.Context, in CredentialSyncInput) (string, error) {
	state := &CredentialSyncState{CredentialID: in.CredentialID, Version: in.Version}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (CredentialSyncState, error) { return *state, nil }); err != nil {
		return "", err
	}
	batched := workflow.GetVersion(ctx, versionBatchedConfirm, workflow.DefaultVersion, 1) == 1
	actx, lctx := activityOptions(ctx), localActivities(ctx)
	planSync := func(out *CredentialSyncPlan) error {
		if batched {
			return workflow.ExecuteLocalActivity(lctx, ActPlanCredentialSync, in).Get(ctx, out)
		}
		return workflow.ExecuteActivity(actx, ActPlanCredentialSync, in).Get(ctx, out)
	}

	var plan CredentialSyncPlan
	if err := planSync(&plan); err != nil {
		return "", err
	}
	if plan.Superseded {
		state.Superseded = true
		return "superseded", nil
	}
	state.Targets = plan.Targets
	pending := func() int {
		n := 0
		for _, t := range state.Targets {
			if !t.Confirmed {
				n++
			}
		}
		return n
	}

	acks := workflow.GetSignalChannel(ctx, SignalCredentialAck)
	for pending() > 0 {
		var ack CredentialAck
		got, recheck := false, false
		tctx, cancel := workflow.WithCancel(ctx)
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(acks, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, &ack); got = true })
		sel.AddFuture(workflow.NewTimer(tctx, credentialRecheck), func(workflow.Future) { recheck = true })
		sel.Select(ctx)
		cancel()
		if recheck && batched && longHistory(ctx) &&
			workflow.GetVersion(ctx, versionContinueAsNew, workflow.DefaultVersion, 1) == 1 {
			// A straggler can keep a rollout waiting for days: carry on in a fresh run (which
			// plans again and finds what is confirmed in Postgres) before the history limit.
			// Acknowledgements that arrived are confirmed first; none may be dropped.
			if batch := drainAcks(acks); len(batch) > 0 {
				confirmBatch(ctx, lctx, in, state, batch)
				continue
			}
			return "", workflow.NewContinueAsNewError(ctx, CredentialSyncWorkflow, in)
		}
		if recheck {
			var again CredentialSyncPlan
			// Re-planning is idempotent: it re-enqueues nothing that exists and tells us
			// whether a newer version took over.
			if err := planSync(&again); err == nil && again.Superseded {
				state.Superseded = true
				return "superseded", nil
			}
			continue
		}
		if !got {
			continue
		}
		if !batched {
			confirmOne(ctx, actx, in, state, ack)
			continue
		}
		// Everything that has arrived meanwhile is confirmed in the same step.
		confirmBatch(ctx, lctx, in, state, append([]CredentialAck{ack}, drainAcks(acks)...))
	}
	state.Done = true
	return "confirmed", nil
}

// versionContinueAsNew added Continue-As-New to long rollouts.
const versionContinueAsNew = "credential-sync-continue-as-new"

// continueAsNewAfter is the history length past which a rollout continues as new when the
// server has not suggested it sooner (Temporal refuses a history past 51,200 events).
var continueAsNewAfter = 10000

func longHistory(ctx workflow.Context) bool {
	info := workflow.GetInfo(ctx)
	return info.GetContinueAsNewSuggested() || info.GetCurrentHistoryLength() > continueAsNewAfter
}

// drainAcks takes every acknowledgement already received.
func drainAcks(acks workflow.ReceiveChannel) []CredentialAck {
	var out []CredentialAck
	for {
		var a CredentialAck
		if !acks.ReceiveAsync(&a) {
			return out
		}
		out = append(out, a)
	}
}

// confirmBatch confirms, in one step, the clusters a batch of acknowledgements confirms.
func confirmBatch(ctx, lctx workflow.Context, in CredentialSyncInput, state *CredentialSyncState, batch []CredentialAck) {
	confirm := ConfirmRolloutsInput{CredentialID: in.CredentialID, Version: in.Version}
	var confirming []int
	for _, a := range batch {
		for i := range state.Targets {
			t := &state.Targets[i]
			if t.ClusterID != a.ClusterID || t.CommandID != a.CommandID || t.Confirmed {
				continue
			}
			t.LastMessage = a.Message
			if a.Success && !slices.Contains(confirming, i) {
				confirming = append(confirming, i)
				confirm.Clusters = append(confirm.Clusters, ClusterConfirmation{ClusterID: a.ClusterID, CommandID: a.CommandID, AgentID: a.AgentID})
			}
		}
	}
	if len(confirming) == 0 {
		return
	}
	if err := workflow.ExecuteLocalActivity(lctx, ActConfirmRollouts, confirm).Get(ctx, nil); err != nil {
		return // only a non-retryable failure ends up here: the clusters stay pending, visibly
	}
	for k, i := range confirming {
		state.Targets[i].Confirmed, state.Targets[i].ConfirmedBy = true, confirm.Clusters[k].AgentID
	}
}

// confirmOne is the confirmation step of runs started before versionBatchedConfirm.
func confirmOne(ctx, actx workflow.Context, in CredentialSyncInput, state *CredentialSyncState, ack CredentialAck) {
	for i := range state.Targets {
		t := &state.Targets[i]
		if t.ClusterID != ack.ClusterID || t.CommandID != ack.CommandID || t.Confirmed {
			continue
		}
		t.LastMessage = ack.Message
		if !ack.Success {
			continue
		}
		if err := workflow.ExecuteActivity(actx, ActConfirmRollout, ConfirmInput{CredentialID: in.CredentialID, Version: in.Version,
			ClusterID: ack.ClusterID, CommandID: ack.CommandID, AgentID: ack.AgentID}).Get(ctx, nil); err == nil {
			t.Confirmed, t.ConfirmedBy = true, ack.AgentID
		}
	}
}

// CredentialExpiryWorkflow sleeps until a credential's expiry (or the end of a rotation's
// grace period) and then ends it, which starts the revocation rollout.
func CredentialExpiryWorkflow(ctx workflow.Context, in CredentialExpiryInput) (string, error) {
	if d := in.At.Sub(workflow.Now(ctx)); d > 0 {
		if err := workflow.Sleep(ctx, d); err != nil {
			return "", err
		}
	}
	if err := workflow.ExecuteActivity(activityOptions(ctx), ActExpireCredential, in).Get(ctx, nil); err != nil {
		return "", err
	}
	return "ended", nil
}
