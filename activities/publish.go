// Package activities holds the Temporal activities: the only code through which workflows
// touch Postgres, the agent outbox or Temporal itself. Each group of activities is a struct
// holding its dependencies; Register adds its methods under the names the workflows use.
package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/publish"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/tracing"
	"github.com/imprun/imprun-server/workflows"
)

// Publish holds the activities of PublishWorkflow and WithdrawWorkflow.
type Publish struct {
	Store    *store.Store
	Temporal client.Client     // to cancel a deploy run that a withdraw replaces
	Outcomes *metrics.Outcomes // nil: nothing recorded
}

// Register adds the activities to a worker.
func (a *Publish) Register(r worker.ActivityRegistry) {
	r.RegisterActivityWithOptions(a.PreparePublish, activity.RegisterOptions{Name: workflows.ActPreparePublish})
	r.RegisterActivityWithOptions(a.EnqueueDeploy, activity.RegisterOptions{Name: workflows.ActEnqueueDeploy})
	r.RegisterActivityWithOptions(a.PrepareAndEnqueue, activity.RegisterOptions{Name: workflows.ActPrepareAndEnqueue})
	r.RegisterActivityWithOptions(a.ClusterPresence, activity.RegisterOptions{Name: workflows.ActClusterPresence})
	r.RegisterActivityWithOptions(a.FinishPublish, activity.RegisterOptions{Name: workflows.ActFinishPublish})
	r.RegisterActivityWithOptions(a.CancelDeploy, activity.RegisterOptions{Name: workflows.ActCancelDeploy})
	r.RegisterActivityWithOptions(a.BeginWithdraw, activity.RegisterOptions{Name: workflows.ActBeginWithdraw})
}

func validation(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), workflows.ErrTypeValidation, nil)
}

// lockOwned locks the publish and checks the run still owns it (workflow_id is the fencing
// token: a withdraw that took over makes every later write of the old run a no-op).
// Call it in InTx: the lock lasts until the transaction ends.
func lockOwned(ctx context.Context, st *store.Store, publishID, workflowID string) (models.ProductPublish, bool, error) {
	return lockOwnedWith(publishID, workflowID, func(id uuid.UUID) (models.ProductPublish, error) { return st.LockPublish(ctx, id) })
}

// lockOwnedWith is lockOwned with the store call that locks the row.
func lockOwnedWith(publishID, workflowID string, lock func(uuid.UUID) (models.ProductPublish, error)) (models.ProductPublish, bool, error) {
	id, err := uuid.Parse(publishID)
	if err != nil {
		return models.ProductPublish{}, false, validation("publish %s no longer exists", publishID)
	}
	p, err := lock(id)
	if errors.Is(err, store.ErrNotFound) {
		return p, false, validation("publish %s no longer exists", publishID)
	}
	if err != nil {
		return p, false, err
	}
	return p, p.WorkflowID != nil && *p.WorkflowID == workflowID, nil
}

// PreparePublish validates the publish, freezes the revision snapshot (or copies the rolled-
// back revision) and sets DEPLOYING. It is idempotent: a retry finds the frozen revision.
// One transaction from the lock to DEPLOYING and the timeline event.
func (a *Publish) PreparePublish(ctx context.Context, in workflows.PrepareInput) (workflows.PrepareResult, error) {
	var res workflows.PrepareResult
	err := a.Store.InTx(ctx, func(ctx context.Context) error {
		var frozen *models.PublishEvent
		var err error
		if res, frozen, err = a.freeze(ctx, in); err != nil || frozen == nil {
			return err
		}
		return a.Store.AddPublishEvents(ctx, []models.PublishEvent{*frozen})
	})
	return res, err
}

// freeze is PreparePublish inside the caller's transaction, but for the "revision frozen"
// timeline event, which it returns (nil when a retry found the revision frozen) for the
// caller to write. Kept in one function so the order of its steps under the lock (fencing
// check, re-validation, freeze, claim of hostnames) is read in one place.
func (a *Publish) freeze(ctx context.Context, in workflows.PrepareInput) (res workflows.PrepareResult, event *models.PublishEvent, err error) {
	st := a.Store
	err = func() error {
		var sum string
		var frozen bool
		p, owned, err := lockOwnedWith(in.PublishID, in.WorkflowID, func(id uuid.UUID) (p models.ProductPublish, err error) {
			p, sum, frozen, err = st.LockPublishRevision(ctx, id, in.Revision)
			return p, err
		})
		if err != nil {
			return err
		}
		if !owned {
			return validation("another run took over publish %s", in.PublishID)
		}
		if frozen {
			res.Checksum = sum
			return nil
		}
		src, err := publish.ValidateTargets(ctx, st, p)
		if err != nil {
			if reason, ok := publish.Reason(err); ok {
				return validation("%s", reason)
			}
			return err
		}
		var snap store.BuiltSnapshot
		var rollbackOf *int
		if in.RollbackOf > 0 {
			old, err := st.GetRevision(ctx, p.ID, in.RollbackOf)
			if err != nil {
				return validation("revision %d of publish %s does not exist", in.RollbackOf, p.ID)
			}
			snap = store.BuiltSnapshot{Bytes: old.Snapshot, Checksum: old.Checksum}
			if snap.Uses, err = st.RevisionUses(ctx, p.ID, in.RollbackOf); err != nil {
				return err
			}
			rollbackOf = &in.RollbackOf
		} else {
			snap, err = st.BuildSnapshot(ctx, p, src)
			if errors.Is(err, store.ErrNotFound) {
				return validation("%s", err.Error())
			}
			if err != nil {
				return err
			}
		}
		// Shared clusters: the publish serves only names under its tenant's domains, and takes
		// each (port, hostname) from every other publish of the cluster (a unique key).
		hosts, err := store.SnapshotHosts(snap.Bytes)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(hosts))
		for _, h := range hosts {
			names = append(names, h.Hostname)
		}
		notOwned, err := st.HostsNotOwned(ctx, p.TenantID, names)
		if err != nil {
			return err
		}
		if len(notOwned) > 0 {
			return validation("hostname %s is not under a domain the tenant owns (operators grant domains)", strings.Join(dedupe(notOwned), ", "))
		}
		if err := st.ClaimHosts(ctx, p, hosts); errors.Is(err, store.ErrHostTaken) {
			return validation("%s", err.Error())
		} else if err != nil {
			return err
		}
		rev := models.PublishRevision{PublishID: p.ID, Revision: in.Revision, Snapshot: snap.Bytes, Checksum: snap.Checksum, RollbackOf: rollbackOf, CreatedBy: in.Actor}
		if err := st.FreezeRevision(ctx, &p, &rev, snap.Uses); err != nil {
			return err
		}
		res.Checksum = snap.Checksum
		msg := fmt.Sprintf("revision %d frozen (sha256 %s)", in.Revision, snap.Checksum[:12])
		if rollbackOf != nil {
			msg = fmt.Sprintf("revision %d frozen as a copy of revision %d (sha256 %s)", in.Revision, *rollbackOf, snap.Checksum[:12])
		}
		key := "frozen/" + in.WorkflowID
		event = &models.PublishEvent{PublishID: p.ID, Type: models.PublishEventRevisionFrozen, Revision: in.Revision, Actor: in.Actor,
			Message: msg, Metadata: models.JSONMap{"checksum": snap.Checksum}, DedupeKey: &key, CreatedAt: time.Now().UTC()}
		return nil
	}()
	return res, event, err
}

// PrepareAndEnqueue is PreparePublish and EnqueueDeploy in one transaction: the revision is
// frozen and its DeployCommand queued together (the agents are woken on commit), one local
// activity and one transaction instead of two of each. Idempotent as both steps are.
func (a *Publish) PrepareAndEnqueue(ctx context.Context, in workflows.PrepareInput) (workflows.PreparedDeploy, error) {
	var out workflows.PreparedDeploy
	var created bool
	err := a.Store.InTx(ctx, func(ctx context.Context) error {
		prep, frozen, err := a.freeze(ctx, in)
		if err != nil {
			return err
		}
		out.Checksum = prep.Checksum
		var queued models.PublishEvent
		out.CommandID, created, queued, err = a.enqueue(ctx, workflows.DeployCommandInput{PublishID: in.PublishID, ClusterID: in.ClusterID,
			Revision: in.Revision, Checksum: prep.Checksum, Action: models.DeployApply, WorkflowID: in.WorkflowID})
		if err != nil {
			return err
		}
		// Both timeline events in one statement, each with its own time (frozen first).
		events := []models.PublishEvent{queued}
		if frozen != nil {
			queued.CreatedAt = frozen.CreatedAt.Add(time.Microsecond)
			events = []models.PublishEvent{*frozen, queued}
		}
		return a.Store.AddPublishEvents(ctx, events)
	})
	if err == nil && created {
		a.Outcomes.CommandsQueued(models.CommandDeploy, 1)
	}
	return out, err
}

// EnqueueDeploy hands the deploy (or withdraw) command to the agent outbox, idempotently.
func (a *Publish) EnqueueDeploy(ctx context.Context, in workflows.DeployCommandInput) (workflows.DeployCommandResult, error) {
	id, created, queued, err := a.enqueue(ctx, in)
	if err != nil {
		return workflows.DeployCommandResult{}, err
	}
	// The timeline event is informational (a duplicate is skipped by its key): its failure
	// does not undo the queued command.
	_ = a.Store.AddPublishEvent(ctx, &queued)
	if created {
		a.Outcomes.CommandsQueued(models.CommandDeploy, 1)
	}
	return workflows.DeployCommandResult{CommandID: id}, nil
}

// enqueue queues the command and returns its timeline event for the caller to write; created
// is false when an earlier attempt queued it already.
func (a *Publish) enqueue(ctx context.Context, in workflows.DeployCommandInput) (commandID string, created bool, event models.PublishEvent, err error) {
	cid, err := uuid.Parse(in.ClusterID)
	if err != nil {
		return "", false, event, validation("bad cluster id %q", in.ClusterID)
	}
	cmd := models.AgentCommand{ClusterID: cid, Kind: models.CommandDeploy, Priority: models.PriorityNormal,
		DedupeKey: "deploy/" + in.WorkflowID, SupersedeKey: "publish/" + in.PublishID,
		// The activity's span: the gateway's delivery and the agent's apply continue its trace.
		TraceContext: tracing.Inject(ctx),
		Payload:      models.ToJSONMap(models.DeployPayload{PublishID: in.PublishID, Revision: in.Revision, Checksum: in.Checksum, Action: in.Action})}
	if created, err = a.Store.EnqueueCommand(ctx, &cmd); err != nil {
		return "", false, event, err
	}
	pid, _ := uuid.Parse(in.PublishID)
	key := "queued/" + in.WorkflowID
	event = models.PublishEvent{PublishID: pid, Type: models.PublishEventCommandQueued, Revision: in.Revision,
		Message: fmt.Sprintf("%s command queued for the agents of the cluster", in.Action), DedupeKey: &key,
		Metadata: models.JSONMap{"command_id": cmd.ID.String(), "action": in.Action}}
	return cmd.ID.String(), created, event, nil
}

// ClusterPresence reports the cluster's agents and since when the offline ones are offline.
func (a *Publish) ClusterPresence(ctx context.Context, clusterID string) (workflows.ClusterPresence, error) {
	out := workflows.ClusterPresence{ClusterID: clusterID, CheckedAt: time.Now().UTC(), Agents: []workflows.AgentPresence{}}
	cid, err := uuid.Parse(clusterID)
	if err != nil {
		return out, fmt.Errorf("bad cluster id %q: %w", clusterID, err)
	}
	name, err := a.Store.ClusterName(ctx, cid)
	if err != nil {
		return out, err
	}
	out.ClusterName = name
	rows, err := a.Store.ClusterAgentPresence(ctx, cid)
	for _, r := range rows {
		out.Agents = append(out.Agents, workflows.AgentPresence{AgentID: r.ID.String(), Name: r.Name, Status: r.Status,
			LastHeartbeatAt: r.LastHeartbeatAt, OfflineSince: r.OfflineSince})
	}
	return out, err
}

// FinishPublish writes a run's outcome: the status (only while the run still owns the
// publish), the timeline event, and the audit entry of the workflow's decision.
func (a *Publish) FinishPublish(ctx context.Context, in workflows.FinishInput) error {
	st := a.Store
	var took time.Duration // set when this run wrote the outcome
	err := st.InTx(ctx, func(ctx context.Context) error {
		p, owned, err := lockOwned(ctx, st, in.PublishID, in.WorkflowID)
		if err != nil {
			var app *temporal.ApplicationError
			if errors.As(err, &app) {
				return nil // the publish was deleted: nothing left to record
			}
			return err
		}
		if owned {
			wasPublished := p.PublishedAt != nil
			began := p.UpdatedAt // the run marked it DEPLOYING or WITHDRAWING
			if err := st.RecordPublishOutcome(ctx, &p, store.PublishOutcome{Status: in.Status, Reason: in.Reason, Actor: in.Actor}); err != nil {
				return err
			}
			took = max(time.Since(began), time.Millisecond)
			// A withdrawn publish, or a failed one that never served, gives its hostnames
			// back; a failed new revision of a published one may still be served by agents
			// that kept the last good one, so it keeps them.
			if in.Status == models.PublishWithdrawn || (in.Status == models.PublishFailed && !wasPublished) {
				if err := st.ReleaseHosts(ctx, p.ID); err != nil {
					return err
				}
			}
		}
		key := "finish/" + in.WorkflowID
		msg := in.Message
		if msg == "" {
			msg = in.Reason
		}
		ev := models.PublishEvent{PublishID: p.ID, Type: in.Event, Revision: in.Revision, Actor: in.Actor, Message: models.Cut(msg, 2000),
			DedupeKey: &key, Metadata: models.JSONMap{"workflow_id": in.WorkflowID, "status": in.Status, "reason": in.Reason}}
		if id, err := uuid.Parse(in.AgentID); err == nil {
			ev.AgentID = &id
		}
		added, err := st.AddPublishEventOnce(ctx, &ev)
		if err != nil {
			return err
		}
		if !added || in.Status == "" {
			return nil // already recorded by an earlier attempt, or nothing decided
		}
		slug, _ := st.TenantSlug(ctx, p.TenantID)
		tid := p.TenantID
		return st.InsertAudit(ctx, &models.AuditLog{ActorType: models.ActorWorkflow, ActorID: in.WorkflowID, ActorRoles: models.StringArray{},
			TenantID: &tid, TenantSlug: slug, Action: "product_publish." + in.Event, ResourceType: "product_publish",
			ResourceID: p.ID.String(), Summary: models.JSONMap{"revision": in.Revision, "status": in.Status, "reason": in.Reason, "requested_by": in.Actor}})
	})
	if err == nil && took > 0 && in.Status != "" {
		a.Outcomes.Publish(strings.ToLower(in.Status), took)
	}
	return err
}

// CancelDeploy cancels a deploy run and waits until it has closed.
func (a *Publish) CancelDeploy(ctx context.Context, in workflows.CancelDeployInput) error {
	err := a.Temporal.CancelWorkflow(ctx, in.WorkflowID, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil && !isAlreadyClosed(err) {
		return err
	}
	for {
		d, err := a.Temporal.DescribeWorkflowExecution(ctx, in.WorkflowID, "")
		if errors.As(err, &nf) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			return nil
		}
		activity.RecordHeartbeat(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func isAlreadyClosed(err error) bool {
	var fp *serviceerror.FailedPrecondition
	return errors.As(err, &fp)
}

// BeginWithdraw marks the publish WITHDRAWING and returns the revision it withdraws.
func (a *Publish) BeginWithdraw(ctx context.Context, in workflows.BeginWithdrawInput) (workflows.BeginWithdrawResult, error) {
	var res workflows.BeginWithdrawResult
	st := a.Store
	err := st.InTx(ctx, func(ctx context.Context) error {
		p, owned, err := lockOwned(ctx, st, in.PublishID, in.WorkflowID)
		if err != nil {
			return err
		}
		if !owned {
			return validation("another run took over publish %s", in.PublishID)
		}
		res.Revision = p.CurrentRevision
		if p.CurrentRevision > 0 {
			sum, _, err := st.RevisionChecksum(ctx, p.ID, p.CurrentRevision)
			if err != nil {
				return err
			}
			res.Checksum = sum
		}
		return st.MarkPublishWithdrawing(ctx, &p, in.Reason)
	})
	return res, err
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
