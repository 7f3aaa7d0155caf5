package publish

import (
	"context"
	"errors"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// What a rollout (package rollout, RolloutWorkflow) needs from publishes: the same rules and the
// same claim as a REST publish, but the run is started by the rollout's workflow as a child, so
// these functions claim and return the run instead of starting it.

// Claimed is a claim whose run the caller starts: a PublishWorkflow (Publish set) or a
// WithdrawWorkflow (Withdraw set), with id WorkflowID.
type Claimed struct {
	Publish    models.ProductPublish // as it was before the claim
	WorkflowID string
	Revision   int // the revision the run deploys (or withdraws)
	Previous   int // the revision the cluster had before (0: none)
	Created    bool
	Run        *workflows.PublishInput
	Withdraw   *workflows.WithdrawInput
}

// ErrBusy says another run holds the publish; the caller waits and asks again.
var ErrBusy = errors.New("a workflow run is in flight for this publish")

// Check validates ch as a REST create would, on a probe publish with id (uuid.Nil for a new
// one), without saving anything. A rollout checks every target cluster this way before it
// starts.
func Check(ctx context.Context, st *store.Store, tenantID, id uuid.UUID, ch Changes) (models.ProductPublish, error) {
	p := models.ProductPublish{ID: id, TenantID: tenantID}
	t, err := apply(ch, &p, true)
	if err != nil {
		return p, err
	}
	return p, checkRequest(ctx, st, ch, &p, t, true)
}

// ClaimNext claims the next revision of the cluster's publish of the product on ch's hostname,
// creating the publish (checked by the same rules as a REST create) when there is none. A
// PUBLISHED publish is redeployed as a new revision. A claim that this caller already made and
// whose run has not started yet (a retried activity) is returned again.
func (s *Service) ClaimNext(ctx context.Context, tenantID uuid.UUID, actor string, ch Changes, rec *audit.Record) (Claimed, error) {
	if ch.ProductID == nil || ch.ClusterID == nil || ch.Hostname == nil {
		return Claimed{}, fault.ValidationFailed(fault.FieldError{Field: "product_id", Message: "product, cluster and hostname are required"})
	}
	productID, err1 := uuid.Parse(*ch.ProductID)
	clusterID, err2 := uuid.Parse(*ch.ClusterID)
	if err1 != nil || err2 != nil {
		return Claimed{}, fault.ValidationFailed(fault.FieldError{Field: "cluster_id", Message: "must be a UUID"})
	}
	var out Claimed
	err := s.Store.InTx(ctx, func(ctx context.Context) error {
		cur, err := s.Store.ClusterPublishOf(ctx, tenantID, productID, clusterID, strings.ToLower(*ch.Hostname))
		switch {
		case errors.Is(err, store.ErrNotFound):
			p, err := Check(ctx, s.Store, tenantID, uuid.Nil, ch)
			if err != nil {
				return err
			}
			p.ID, p.CreatedBy = uuid.Nil, actor
			if err := s.Store.CreatePublish(ctx, &p); err != nil {
				return err
			}
			if err := rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.create", ResourceType: "product_publish", ResourceID: p.ID.String(), ResourceName: p.Hostname,
				Summary: map[string]any{"product_id": p.ProductID, "cluster_id": p.ClusterID, "environment": p.Environment}}); err != nil {
				return err
			}
			cur, out.Created = p, true
		case err != nil:
			return err
		default:
			if _, err := Check(ctx, s.Store, tenantID, cur.ID, ch); err != nil {
				return err
			}
		}
		next := workflows.PublishWorkflowID(cur.ID.String(), cur.CurrentRevision+1)
		if cur.WorkflowID != nil && *cur.WorkflowID == next {
			out.Publish, out.WorkflowID, out.Revision, out.Previous = cur, next, cur.CurrentRevision+1, publishedRevision(cur)
			out.Run = &workflows.PublishInput{PublishID: cur.ID.String(), TenantID: cur.TenantID.String(), ClusterID: cur.ClusterID.String(),
				ProductID: cur.ProductID.String(), Revision: out.Revision, Actor: actor, Deadline: s.deadline(cur), Shape: workflows.PublishShape}
			return nil
		}
		if cur.WorkflowID != nil {
			return ErrBusy
		}
		r, err := s.claimRevisionFrom(ctx, cur, 0, []string{models.PublishDraft, models.PublishPublished, models.PublishFailed, models.PublishWithdrawn}, actor, rec)
		if err != nil {
			return err
		}
		in := r.input.(workflows.PublishInput)
		out.Publish, out.WorkflowID, out.Revision, out.Previous, out.Run = r.publish, r.id, in.Revision, publishedRevision(cur), &in
		return nil
	})
	return out, err
}

// publishedRevision is the revision a publish serves now (0 when it serves none).
func publishedRevision(p models.ProductPublish) int {
	if p.Status == models.PublishPublished {
		return p.CurrentRevision
	}
	return 0
}

// ClaimRevert claims the run that puts a publish back where it was before a rollout: a
// rollback to revision previous as a new revision, or, when the cluster served none, a
// withdraw.
func (s *Service) ClaimRevert(ctx context.Context, publishID uuid.UUID, previous int, actor, reason string, rec *audit.Record) (Claimed, error) {
	var out Claimed
	err := s.Store.InTx(ctx, func(ctx context.Context) error {
		cur, err := s.Store.GetPublishByID(ctx, publishID)
		if err != nil {
			return err
		}
		if cur.WorkflowID != nil {
			return ErrBusy
		}
		if previous > 0 {
			r, err := s.claimRevision(ctx, cur, previous, actor, rec)
			if err != nil {
				return err
			}
			in := r.input.(workflows.PublishInput)
			out = Claimed{Publish: r.publish, WorkflowID: r.id, Revision: in.Revision, Previous: previous, Run: &in}
			return nil
		}
		wid := workflows.WithdrawWorkflowID(cur.ID.String(), cur.CurrentRevision)
		before, err := s.Store.ClaimPublish(ctx, cur.TenantID, cur.ID, store.Claim{WorkflowID: wid,
			Statuses: []string{models.PublishPublished, models.PublishFailed, models.PublishDeploying},
			Event: models.PublishEvent{Type: models.PublishEventWithdrawRequested, Revision: cur.CurrentRevision, Actor: actor,
				Message: "withdraw requested: " + reason, Metadata: models.JSONMap{"workflow_id": wid}}})
		if err != nil {
			return stateFault(err)
		}
		out = Claimed{Publish: before, WorkflowID: wid, Revision: cur.CurrentRevision, Withdraw: &workflows.WithdrawInput{PublishID: cur.ID.String(), TenantID: cur.TenantID.String(),
			ClusterID: cur.ClusterID.String(), ProductID: cur.ProductID.String(), Revision: cur.CurrentRevision, Reason: reason, Actor: actor, Deadline: s.deadline(before)}}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "product_publish.withdraw", ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname,
			Summary: map[string]any{"revision": cur.CurrentRevision, "reason": reason, "workflow_id": wid}})
	})
	return out, err
}
