package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"
)

// credentialRecheck is how often a rollout checks whether a newer version replaced it.
const credentialRecheck = time.Minute

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
	actx := activityOptions(ctx)

	var plan CredentialSyncPlan
	if err := workflow.ExecuteActivity(actx, ActPlanCredentialSync, in).Get(ctx, &plan); err != nil {
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
		if recheck {
			var again CredentialSyncPlan
			// Re-planning is idempotent: it re-enqueues nothing that exists and tells us
			// whether a newer version took over.
			if err := workflow.ExecuteActivity(actx, ActPlanCredentialSync, in).Get(ctx, &again); err == nil && again.Superseded {
				state.Superseded = true
				return "superseded", nil
			}
			continue
		}
		if !got {
			continue
		}
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
	state.Done = true
	return "confirmed", nil
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
