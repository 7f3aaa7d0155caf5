package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Service runs the publish use cases.
type Service struct {
	Store     *store.Store
	Temporal  Temporal
	TaskQueue string
	// Deadline is how long a run waits for the agents when the publish names no deadline.
	Deadline time.Duration
	Log      *slog.Logger
}

var errTemporalDown = fault.Down("temporal_unavailable", "the workflow service is not reachable; try again")

// Create validates a new publish and saves it; unless it is a draft, it also claims it for
// revision 1 and starts the run. The publish, its claim and the audit row commit together
// before the run starts.
func (s *Service) Create(ctx context.Context, tenantID uuid.UUID, actor string, ch Changes, rec *audit.Record) (models.ProductPublish, error) {
	p := models.ProductPublish{TenantID: tenantID, CreatedBy: actor}
	t, err := apply(ch, &p, true)
	if err != nil {
		return p, err
	}
	if err := checkRequest(ctx, s.Store, ch, &p, t, true); err != nil {
		return p, err
	}
	if ch.Draft {
		err := s.Store.InTx(ctx, func(ctx context.Context) error {
			if err := s.Store.CreatePublish(ctx, &p); err != nil {
				return err
			}
			return rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.create", ResourceType: "product_publish", ResourceID: p.ID.String(), ResourceName: p.Hostname,
				Summary: map[string]any{"product_id": p.ProductID, "cluster_id": p.ClusterID, "environment": p.Environment, "draft": true}})
		})
		return p, err
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return p, fault.Down("temporal_unavailable", "the workflow service is not reachable; save a draft or try again")
	}
	var r run
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		// The row is inserted already claimed: no one else can see it before the commit. Its
		// id is chosen here, since the run's id is derived from it.
		p.ID = uuid.New()
		r, err = s.claimRevisionWith(ctx, p, 0, []string{models.PublishDraft}, actor, rec, func(ctx context.Context, c store.Claim) (models.ProductPublish, error) {
			return s.Store.CreateClaimedPublish(ctx, &p, c)
		})
		return err
	})
	if err != nil {
		return p, err
	}
	return s.start(ctx, tc, r, rec)
}

// Update edits a DRAFT publish: ch is validated on a copy first so a bad one changes nothing,
// then written under the row lock with its audit row.
func (s *Service) Update(ctx context.Context, cur models.ProductPublish, ch Changes, rec *audit.Record) (models.ProductPublish, error) {
	if ch.Draft {
		return cur, fault.ValidationFailed(fault.FieldError{Field: "draft", Message: "only on create"})
	}
	if cur.Status != models.PublishDraft || cur.WorkflowID != nil {
		return cur, fault.Conflicting("invalid_state", "only a DRAFT publish can be edited", cur.Status)
	}
	probe := cur
	t, err := apply(ch, &probe, false)
	if err != nil {
		return cur, err
	}
	if err := checkRequest(ctx, s.Store, ch, &probe, t, false); err != nil {
		return cur, err
	}
	var after models.ProductPublish
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		var err error
		after, err = s.Store.UpdateDraft(ctx, cur.TenantID, cur.ID, func(p *models.ProductPublish) error {
			keep := p.CreatedBy
			*p = probe
			p.CreatedBy = keep
			return nil
		})
		if err != nil {
			return stateFault(err)
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.update", ResourceType: "product_publish", ResourceID: after.ID.String(), ResourceName: after.Hostname})
	})
	return after, err
}

// Delete removes a DRAFT or WITHDRAWN publish with no run in flight.
func (s *Service) Delete(ctx context.Context, cur models.ProductPublish, rec *audit.Record) error {
	return s.Store.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.Store.DeletePublish(ctx, cur.TenantID, cur.ID); err != nil {
			return stateFault(err)
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.delete", ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname})
	})
}

// Start deploys the publish as a new revision.
func (s *Service) Start(ctx context.Context, cur models.ProductPublish, actor string, rec *audit.Record) (models.ProductPublish, error) {
	return s.claimAndStart(ctx, cur, 0, actor, rec)
}

// Rollback deploys an earlier revision's snapshot again, as a new revision.
func (s *Service) Rollback(ctx context.Context, cur models.ProductPublish, revision int, actor string, rec *audit.Record) (models.ProductPublish, error) {
	if revision < 1 || revision >= cur.CurrentRevision {
		return cur, fault.ValidationFailed(fault.FieldError{Field: "revision", Message: fmt.Sprintf("an earlier revision, from 1 to %d", cur.CurrentRevision-1)})
	}
	if _, err := s.Store.GetRevision(ctx, cur.ID, revision); err != nil {
		return cur, fault.ValidationFailed(fault.FieldError{Field: "revision", Message: "no such revision"})
	}
	return s.claimAndStart(ctx, cur, revision, actor, rec)
}

func (s *Service) claimAndStart(ctx context.Context, cur models.ProductPublish, rollbackOf int, actor string, rec *audit.Record) (models.ProductPublish, error) {
	tc, err := s.Temporal.Client()
	if err != nil {
		return cur, errTemporalDown
	}
	var r run
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		r, err = s.claimRevision(ctx, cur, rollbackOf, actor, rec)
		return err
	})
	if err != nil {
		return cur, err
	}
	return s.start(ctx, tc, r, rec)
}

// Withdraw takes the publish off its cluster. It may take over from a deploy in flight, which
// the withdraw run cancels first.
func (s *Service) Withdraw(ctx context.Context, cur models.ProductPublish, reason, actor string, rec *audit.Record) (models.ProductPublish, error) {
	var v fault.Validator
	v.Check(strings.TrimSpace(reason) != "" && len(reason) <= 1000, "reason", "required, at most 1000 characters")
	if err := v.Err(); err != nil {
		return cur, err
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return cur, errTemporalDown
	}
	wid := workflows.WithdrawWorkflowID(cur.ID.String(), cur.CurrentRevision)
	var r run
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		before, err := s.Store.ClaimPublish(ctx, cur.TenantID, cur.ID, store.Claim{WorkflowID: wid,
			Statuses:       []string{models.PublishDeploying, models.PublishPublished, models.PublishFailed},
			TakeOverPrefix: "publish/",
			Event: models.PublishEvent{Type: models.PublishEventWithdrawRequested, Revision: cur.CurrentRevision, Actor: actor,
				Message: "withdraw requested: " + reason, Metadata: models.JSONMap{"workflow_id": wid}}})
		if err != nil {
			return stateFault(err)
		}
		in := workflows.WithdrawInput{PublishID: cur.ID.String(), TenantID: cur.TenantID.String(), ClusterID: cur.ClusterID.String(),
			ProductID: cur.ProductID.String(), Revision: cur.CurrentRevision, Reason: reason, Actor: actor, Deadline: s.deadline(before)}
		if before.WorkflowID != nil {
			in.CancelWorkflowID = *before.WorkflowID
		}
		r = run{id: wid, workflow: workflows.WithdrawWorkflow, input: in, publish: before, previous: before.WorkflowID}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.withdraw", ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname,
			Summary: map[string]any{"revision": cur.CurrentRevision, "reason": reason, "workflow_id": wid, "cancelled_deploy": in.CancelWorkflowID}})
	})
	if err != nil {
		return cur, err
	}
	return s.start(ctx, tc, r, rec)
}

// run is a claimed workflow run, committed and waiting to be started.
type run struct {
	id       string
	workflow any
	input    any
	publish  models.ProductPublish // as it was before the claim
	previous *string               // the claim to restore if the run can't start
}

// claimRevision claims the publish for the run of its next revision (a rollback of
// rollbackOf when > 0) and writes the audit row, in the caller's transaction.
func (s *Service) claimRevision(ctx context.Context, cur models.ProductPublish, rollbackOf int, actor string, rec *audit.Record) (run, error) {
	return s.claimRevisionFrom(ctx, cur, rollbackOf, []string{models.PublishDraft, models.PublishFailed, models.PublishWithdrawn}, actor, rec)
}

// claimRevisionFrom is claimRevision with the statuses a new (not rolled-back) revision may
// start from: a rollout also redeploys a PUBLISHED publish.
func (s *Service) claimRevisionFrom(ctx context.Context, cur models.ProductPublish, rollbackOf int, statuses []string, actor string, rec *audit.Record) (run, error) {
	return s.claimRevisionWith(ctx, cur, rollbackOf, statuses, actor, rec, func(ctx context.Context, c store.Claim) (models.ProductPublish, error) {
		return s.Store.ClaimPublish(ctx, cur.TenantID, cur.ID, c)
	})
}

// claimRevisionWith is claimRevisionFrom with the store step that takes the claim (a publish
// created in the same transaction is inserted claimed).
func (s *Service) claimRevisionWith(ctx context.Context, cur models.ProductPublish, rollbackOf int, statuses []string, actor string, rec *audit.Record,
	claim func(context.Context, store.Claim) (models.ProductPublish, error)) (run, error) {
	rev := cur.CurrentRevision + 1
	wid := workflows.PublishWorkflowID(cur.ID.String(), rev)
	evType, msg, action := models.PublishEventPublishRequested, fmt.Sprintf("publish of revision %d requested", rev), "product_publish.publish"
	if rollbackOf > 0 {
		statuses = []string{models.PublishPublished, models.PublishFailed, models.PublishWithdrawn}
		evType, msg = models.PublishEventRollbackRequested, fmt.Sprintf("rollback to revision %d requested (as revision %d)", rollbackOf, rev)
		action = "product_publish.rollback"
	}
	expect := cur.CurrentRevision
	before, err := claim(ctx, store.Claim{WorkflowID: wid, Statuses: statuses, ExpectRevision: &expect,
		Event: models.PublishEvent{Type: evType, Revision: rev, Actor: actor, Message: msg, Metadata: models.JSONMap{"workflow_id": wid}}})
	if err != nil {
		return run{}, stateFault(err)
	}
	in := workflows.PublishInput{PublishID: cur.ID.String(), TenantID: cur.TenantID.String(), ClusterID: cur.ClusterID.String(),
		ProductID: cur.ProductID.String(), Revision: rev, RollbackOf: rollbackOf, Actor: actor, Deadline: s.deadline(before), Shape: workflows.PublishShape}
	r := run{id: wid, workflow: workflows.PublishWorkflow, input: in, publish: before}
	return r, rec.Write(ctx, s.Store, audit.Entry{Action: action, ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname,
		Summary: map[string]any{"revision": rev, "rollback_of": rollbackOf, "workflow_id": wid}})
}

func (s *Service) deadline(p models.ProductPublish) time.Duration {
	if p.DeadlineSeconds != nil {
		return time.Duration(*p.DeadlineSeconds) * time.Second
	}
	return s.Deadline
}

// start starts a committed claim's run, outside any transaction: its activities must see the
// claim. A run that can't be started gives the claim back, and the release is audited beside
// the request it undoes. It returns the publish as it was, with the run's id.
func (s *Service) start(ctx context.Context, tc client.Client, r run, rec *audit.Record) (models.ProductPublish, error) {
	if err := s.startRun(ctx, tc, r); err != nil {
		rctx := context.WithoutCancel(ctx)
		if rerr := s.Store.InTx(rctx, func(ctx context.Context) error {
			if err := s.Store.ReleasePublish(ctx, r.publish.ID, r.id, r.previous); err != nil {
				return err
			}
			return rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.release", ResourceType: "product_publish", ResourceID: r.publish.ID.String(),
				ResourceName: r.publish.Hostname, Summary: map[string]any{"workflow_id": r.id, "reason": "the workflow run could not be started"}})
		}); rerr != nil && s.Log != nil {
			s.Log.Error("release publish claim", "publish_id", r.publish.ID, "workflow_id", r.id, "err", rerr)
		}
		return r.publish, err
	}
	p := r.publish
	p.WorkflowID = &r.id
	return p, nil
}

// startRun starts a workflow with the publish's search attributes. The id is deterministic; a
// run with that id already in flight is a conflict.
func (s *Service) startRun(ctx context.Context, tc client.Client, r run) error {
	p := r.publish
	opts := client.StartWorkflowOptions{
		ID:                                       r.id,
		TaskQueue:                                s.TaskQueue,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(p.TenantID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAClusterID).ValueSet(p.ClusterID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAProductID).ValueSet(p.ProductID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAPublishID).ValueSet(p.ID.String()),
		),
	}
	_, err := tc.ExecuteWorkflow(ctx, opts, r.workflow, r.input)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return fault.Conflicting("already_running", "a run "+r.id+" is already in flight", p.Status)
	}
	if err != nil {
		if s.Log != nil {
			s.Log.Error("start workflow", "workflow_id", r.id, "err", err)
		}
		return fault.Down("temporal_unavailable", "the workflow could not be started; try again")
	}
	return nil
}

// stateFault turns the store's refusal in the publish's current state into a conflict.
func stateFault(err error) error {
	var se *store.StateError
	if errors.As(err, &se) {
		return fault.Conflicting("invalid_state", se.Detail, se.Status)
	}
	return err
}
