package workflows

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/models"
)

// SubscriptionWorkflow is the life of one subscription. Without approval it is active at once;
// otherwise it stays pending until an approve or reject decision, or expires at the approval
// deadline. Once active it follows suspend, resume and cancel decisions until it ends. Every
// decision, from REST or from `temporal workflow signal`, goes through decide() and one
// activity that writes the status and the audit entry with the decision's actor.
func SubscriptionWorkflow(ctx workflow.Context, in SubscriptionInput) (string, error) {
	state := &SubscriptionState{Status: models.SubscriptionPending}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (SubscriptionState, error) { return *state, nil }); err != nil {
		return "", err
	}
	actx := activityOptions(ctx)
	transition := func(from []string, to, action string, d Decision) bool {
		var res TransitionResult
		err := workflow.ExecuteActivity(actx, ActTransitionSubscription, TransitionInput{
			SubscriptionID: in.SubscriptionID, From: from, To: to, Decision: d, Action: action}).Get(ctx, &res)
		if err != nil {
			return false
		}
		state.Status = res.Status
		if res.Applied {
			state.LastDecision = d
		}
		return res.Applied
	}

	if !in.ApprovalRequired {
		transition([]string{models.SubscriptionPending}, models.SubscriptionActive, "subscription.auto_approve",
			Decision{Actor: "system", Reason: "the publish needs no approval", Source: "workflow"})
	} else {
		if in.ApprovalDeadline <= 0 {
			in.ApprovalDeadline = 7 * 24 * time.Hour
		}
		state.ApprovalDeadline = workflow.Now(ctx).Add(in.ApprovalDeadline)
		tctx, cancelTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(tctx, in.ApprovalDeadline)
		for state.Status == models.SubscriptionPending {
			sig, d, expired := nextDecision(ctx, timer)
			if !expired && d.Source == badDecision {
				ignore(ctx, state, in.SubscriptionID, sig, d, "")
				continue
			}
			switch {
			case expired:
				transition([]string{models.SubscriptionPending}, models.SubscriptionExpired, "subscription.expire",
					Decision{Actor: "system", Reason: "no decision before the approval deadline", Source: "workflow"})
			case sig == SignalApprove:
				transition([]string{models.SubscriptionPending}, models.SubscriptionActive, "subscription.approve", d)
			case sig == SignalReject:
				transition([]string{models.SubscriptionPending}, models.SubscriptionRejected, "subscription.reject", d)
			case sig == SignalCancel:
				transition([]string{models.SubscriptionPending}, models.SubscriptionCancelled, "subscription.cancel", d)
			default:
				ignore(ctx, state, in.SubscriptionID, sig, d, "not allowed while the subscription is pending")
			}
		}
		cancelTimer()
	}

	for state.Status == models.SubscriptionActive || state.Status == models.SubscriptionSuspended {
		sig, d, _ := nextDecision(ctx, nil)
		if d.Source == badDecision {
			ignore(ctx, state, in.SubscriptionID, sig, d, "")
			continue
		}
		switch {
		case sig == SignalSuspend && state.Status == models.SubscriptionActive:
			transition([]string{models.SubscriptionActive}, models.SubscriptionSuspended, "subscription.suspend", d)
		case sig == SignalResume && state.Status == models.SubscriptionSuspended:
			transition([]string{models.SubscriptionSuspended}, models.SubscriptionActive, "subscription.resume", d)
		case sig == SignalCancel:
			transition([]string{models.SubscriptionActive, models.SubscriptionSuspended}, models.SubscriptionCancelled, "subscription.cancel", d)
		default:
			ignore(ctx, state, in.SubscriptionID, sig, d, "not allowed while the subscription is "+state.Status)
		}
	}
	return state.Status, nil
}

// badDecision marks a signal whose payload is not a Decision.
const badDecision = "malformed"

// nextDecision waits for the next decision signal (or the timer). A payload that is not a
// well-formed Decision comes back as sig "<name>" with d.Reason describing the problem and
// d.Source == badDecision.
func nextDecision(ctx workflow.Context, timer workflow.Future) (sig string, d Decision, expired bool) {
	sel := workflow.NewSelector(ctx)
	for _, name := range []string{SignalApprove, SignalReject, SignalSuspend, SignalResume, SignalCancel} {
		ch := workflow.GetSignalChannel(ctx, name)
		sel.AddReceive(ch, func(c workflow.ReceiveChannel, _ bool) {
			var raw json.RawMessage
			c.Receive(ctx, &raw)
			sig = name
			var err error
			d, err = parseDecision(raw)
			if err != nil {
				d = Decision{Reason: err.Error(), Source: badDecision}
			}
		})
	}
	if timer != nil {
		sel.AddFuture(timer, func(workflow.Future) { expired = true })
	}
	sel.Select(ctx)
	return sig, d, expired
}

// parseDecision decodes a decision strictly: a JSON object with a non-empty actor and only
// the known fields.
func parseDecision(raw json.RawMessage) (Decision, error) {
	var d Decision
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("payload is not a decision {actor, reason}: %v", err)
	}
	d.Actor = strings.TrimSpace(d.Actor)
	if d.Actor == "" || len(d.Actor) > 320 || len(d.Reason) > 1000 {
		return d, fmt.Errorf("a decision needs an actor (at most 320 characters) and a reason of at most 1000")
	}
	if d.Source == "" {
		d.Source = "temporal-cli"
	}
	return d, nil
}

func ignore(ctx workflow.Context, state *SubscriptionState, subscriptionID, sig string, d Decision, why string) {
	state.Ignored++
	problem := why
	if d.Source == badDecision {
		problem = d.Reason
	}
	_ = workflow.ExecuteActivity(activityOptions(ctx), ActRecordIgnoredSignal, IgnoredSignal{
		SubscriptionID: subscriptionID, Signal: sig, Status: state.Status, Problem: problem, Actor: d.Actor}).Get(ctx, nil)
}
