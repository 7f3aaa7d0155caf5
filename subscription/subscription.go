// Package subscription owns the rules and use cases of a customer's subscription to a
// published product: who may subscribe to what under which plan, and the decisions (approve,
// reject, suspend, resume, cancel) that SubscriptionWorkflow applies. The workflow owns the
// status; these use cases create the row and start the run, or signal it.
package subscription

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
	"github.com/imprun/imprun-server/workflows"
)

// Temporal hands out the workflow client, or says it is not reachable.
type Temporal = temporalclient.Source

// Service runs the subscription use cases.
type Service struct {
	Store     *store.Store
	Temporal  Temporal
	TaskQueue string
	// ApprovalDeadline is how long a subscription that needs approval waits for a decision.
	ApprovalDeadline time.Duration
	Log              *slog.Logger
	// Wait is how long an answer waits for the workflow to apply its first step or a
	// decision (5 s when zero).
	Wait time.Duration
}

// Request is the input of Create.
type Request struct {
	ProductPublishID string  `json:"product_publish_id"`
	ClientAppID      string  `json:"client_app_id"`
	PlanID           *string `json:"plan_id"`
	// Environment, when given, must be the publish's: a customer wiring its prod app can't
	// subscribe to a dev publish by mistake.
	Environment string `json:"environment"`
}

var errTemporalDown = fault.Down("temporal_unavailable", "the workflow service is not reachable; try again")

// parsed is a Request whose fields have been read.
type parsed struct {
	publishID, appID uuid.UUID
	planID           *uuid.UUID
}

func (r Request) parse() (parsed, error) {
	var v fault.Validator
	var out parsed
	var err1, err2 error
	out.publishID, err1 = uuid.Parse(r.ProductPublishID)
	v.Check(err1 == nil, "product_publish_id", "required: a UUID")
	out.appID, err2 = uuid.Parse(r.ClientAppID)
	v.Check(err2 == nil, "client_app_id", "required: a UUID")
	if r.PlanID != nil {
		id, err := uuid.Parse(*r.PlanID)
		v.Check(err == nil, "plan_id", "must be a UUID")
		out.planID = &id
	}
	v.Check(r.Environment == "" || r.Environment == models.EnvDev || r.Environment == models.EnvStage || r.Environment == models.EnvProd,
		"environment", "must be dev, stage or prod")
	return out, v.Err()
}

// Create subscribes an app of the customer tenant to a publish it can see. The row and its
// audit row commit together; then the workflow starts (a subscription whose run can't start
// is cancelled at once, and that is audited too). Without approval the answer waits briefly
// for the workflow to make it active.
func (s *Service) Create(ctx context.Context, customerTenantID uuid.UUID, actor string, req Request, rec *audit.Record) (models.Subscription, error) {
	in, err := req.parse()
	if err != nil {
		return models.Subscription{}, err
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return models.Subscription{}, errTemporalDown
	}
	sub, pub, err := s.admit(ctx, customerTenantID, actor, req.Environment, in)
	if err != nil {
		return sub, err
	}
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		if err := s.Store.CreateSubscription(ctx, &sub); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return fault.Conflicting("already_subscribed", "the app already has a live subscription to this publish", "")
			}
			return err
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "subscription.create", ResourceType: "subscription", ResourceID: sub.ID.String(),
			Summary: map[string]any{"product_publish_id": pub.ID, "client_app_id": sub.ClientAppID, "approval_required": pub.ApprovalRequired}})
	})
	if err != nil {
		return sub, err
	}
	if err := s.startRun(ctx, tc, sub, pub); err != nil {
		s.cancelUnstarted(ctx, sub, rec, err)
		return sub, fault.Down("temporal_unavailable", "the subscription could not be started; try again")
	}
	if !pub.ApprovalRequired {
		sub = s.await(ctx, sub, models.SubscriptionPending)
	}
	return sub, nil
}

// admit checks what the subscription points at and builds it: a publish the customer may
// subscribe to (in the environment asked for), an active app of the customer, a plan of the
// product.
func (s *Service) admit(ctx context.Context, tenantID uuid.UUID, actor, env string, in parsed) (models.Subscription, models.ProductPublish, error) {
	var sub models.Subscription
	pub, err := s.Store.PublishVisibleTo(ctx, in.publishID, tenantID)
	if err == nil && env != "" && pub.Environment != env {
		return sub, pub, fault.ValidationFailed(fault.FieldError{Field: "product_publish_id", Message: "the publish is in environment " + pub.Environment + ", not " + env})
	}
	if errors.Is(err, store.ErrNotFound) {
		// Withdrawn, private and not invited, or unknown: the same answer.
		return sub, pub, fault.ValidationFailed(fault.FieldError{Field: "product_publish_id", Message: "no published product you can subscribe to"})
	}
	if err != nil {
		return sub, pub, err
	}
	app, err := s.Store.GetClientApp(ctx, tenantID, in.appID)
	if errors.Is(err, store.ErrNotFound) {
		return sub, pub, fault.ValidationFailed(fault.FieldError{Field: "client_app_id", Message: "no such app"})
	}
	if err != nil {
		return sub, pub, err
	}
	if app.Status != models.AppActive {
		return sub, pub, fault.ValidationFailed(fault.FieldError{Field: "client_app_id", Message: "the app is inactive"})
	}
	planID, err := s.choosePlan(ctx, pub.ProductID, in.planID)
	if err != nil {
		return sub, pub, err
	}
	sub = models.Subscription{CustomerTenantID: tenantID, ProviderTenantID: pub.TenantID, ProductPublishID: pub.ID, ClientAppID: app.ID,
		PlanID: planID, ApprovalRequired: pub.ApprovalRequired, CreatedBy: actor}
	if pub.ApprovalRequired {
		dl := time.Now().UTC().Add(s.ApprovalDeadline).Truncate(time.Microsecond)
		sub.ApprovalDeadline = &dl
	}
	return sub, pub, nil
}

// choosePlan: plans are not optional. A subscription to a product with plans runs under one,
// so its limits and quota always reach the gateway (a subscription without one is unlimited):
// the one asked for, else the only one, else the default.
func (s *Service) choosePlan(ctx context.Context, productID uuid.UUID, planID *uuid.UUID) (*uuid.UUID, error) {
	plans, defaultPlan, err := s.Store.ProductPlanIDs(ctx, productID)
	if err != nil {
		return nil, err
	}
	switch {
	case planID != nil && !slices.Contains(plans, *planID):
		return nil, fault.ValidationFailed(fault.FieldError{Field: "plan_id", Message: "not a plan of this product"})
	case planID == nil && len(plans) == 1:
		planID = &plans[0]
	case planID == nil && defaultPlan != nil:
		planID = defaultPlan
	case planID == nil && len(plans) > 1:
		return nil, fault.ValidationFailed(fault.FieldError{Field: "plan_id", Message: fmt.Sprintf("required: the product has %d plans and marks none as default; choose one", len(plans))})
	}
	return planID, nil
}

func (s *Service) startRun(ctx context.Context, tc client.Client, sub models.Subscription, pub models.ProductPublish) error {
	_, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.SubscriptionWorkflowID(sub.ID.String()), TaskQueue: s.TaskQueue,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(sub.CustomerTenantID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAPublishID).ValueSet(pub.ID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAProductID).ValueSet(pub.ProductID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAClusterID).ValueSet(pub.ClusterID.String())),
	}, workflows.SubscriptionWorkflow, workflows.SubscriptionInput{SubscriptionID: sub.ID.String(),
		ApprovalRequired: pub.ApprovalRequired, ApprovalDeadline: s.ApprovalDeadline})
	return err
}

// cancelUnstarted ends a subscription whose run could not be started, with its audit row:
// the row stays, never pending without a run.
func (s *Service) cancelUnstarted(ctx context.Context, sub models.Subscription, rec *audit.Record, cause error) {
	if s.Log != nil {
		s.Log.Error("start subscription workflow", "subscription_id", sub.ID, "err", cause)
	}
	const reason = "the workflow could not be started"
	ctx = context.WithoutCancel(ctx)
	err := s.Store.InTx(ctx, func(ctx context.Context) error {
		_, applied, err := s.Store.TransitionSubscription(ctx, sub.ID, []string{models.SubscriptionPending}, models.SubscriptionCancelled, "system", reason)
		if err != nil || !applied {
			return err
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "subscription.cancel", ResourceType: "subscription", ResourceID: sub.ID.String(),
			Summary: map[string]any{"status": map[string]string{"before": models.SubscriptionPending, "after": models.SubscriptionCancelled}, "reason": reason}})
	})
	if err != nil && s.Log != nil {
		s.Log.Error("cancel unstarted subscription", "subscription_id", sub.ID, "err", err)
	}
}

// decisionFrom says in which statuses a decision applies.
var decisionFrom = map[string][]string{
	workflows.SignalApprove: {models.SubscriptionPending},
	workflows.SignalReject:  {models.SubscriptionPending},
	workflows.SignalSuspend: {models.SubscriptionActive},
	workflows.SignalResume:  {models.SubscriptionSuspended},
	workflows.SignalCancel:  {models.SubscriptionPending, models.SubscriptionActive, models.SubscriptionSuspended},
}

// Decide sends a decision (approve, reject, suspend, resume, cancel) to the subscription's
// workflow: the same signal, handler and audit entry as `temporal workflow signal`, so the
// workflow's activity audits it, not the caller. It waits briefly for the workflow to apply
// it and reports whether it did.
func (s *Service) Decide(ctx context.Context, sub models.Subscription, signal, actor, reason string) (after models.Subscription, applied bool, err error) {
	var v fault.Validator
	v.Check(len(reason) <= 1000, "reason", "at most 1000 characters")
	v.Check(signal != workflows.SignalReject || strings.TrimSpace(reason) != "", "reason", "required to reject")
	if err := v.Err(); err != nil {
		return sub, false, err
	}
	if !slices.Contains(decisionFrom[signal], sub.Status) {
		return sub, false, fault.Conflicting("invalid_state", "cannot "+signal+" a subscription that is "+sub.Status, sub.Status)
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return sub, false, errTemporalDown
	}
	err = tc.SignalWorkflow(ctx, workflows.SubscriptionWorkflowID(sub.ID.String()), "", signal,
		workflows.Decision{Actor: actor, Reason: reason, Source: "rest"})
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return sub, false, fault.Conflicting("invalid_state", "the subscription has ended", sub.Status)
	}
	if err != nil {
		return sub, false, fault.Down("temporal_unavailable", "the decision could not be sent; try again")
	}
	after = s.await(ctx, sub, sub.Status)
	return after, after.Status != sub.Status, nil
}

// await polls until the subscription leaves `from` or the wait ends.
func (s *Service) await(ctx context.Context, sub models.Subscription, from string) models.Subscription {
	wait := s.Wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		cur, err := s.Store.GetSubscriptionByID(ctx, sub.ID)
		if err == nil && cur.Status != from {
			return cur
		}
		select {
		case <-ctx.Done():
			return sub
		case <-time.After(50 * time.Millisecond):
		}
	}
	if cur, err := s.Store.GetSubscriptionByID(ctx, sub.ID); err == nil {
		return cur
	}
	return sub
}
