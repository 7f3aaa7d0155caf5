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
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/publish"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// Publish holds the activities of PublishWorkflow and WithdrawWorkflow.
type Publish struct {
	Store    *store.Store
	Temporal client.Client // to cancel a deploy run that a withdraw replaces
}

// Register adds the activities to a worker.
func (a *Publish) Register(r worker.ActivityRegistry) {
	r.RegisterActivityWithOptions(a.PreparePublish, activity.RegisterOptions{Name: workflows.ActPreparePublish})
	r.RegisterActivityWithOptions(a.EnqueueDeploy, activity.RegisterOptions{Name: workflows.ActEnqueueDeploy})
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
func lockOwned(tx *gorm.DB, publishID, workflowID string) (models.ProductPublish, bool, error) {
	var p models.ProductPublish
	if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&p, "id = ?", publishID).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return p, false, validation("publish %s no longer exists", publishID)
		}
		return p, false, err
	}
	return p, p.WorkflowID != nil && *p.WorkflowID == workflowID, nil
}

// PreparePublish validates the publish, freezes the revision snapshot (or copies the rolled-
// back revision) and sets DEPLOYING. It is idempotent: a retry finds the frozen revision.
func (a *Publish) PreparePublish(ctx context.Context, in workflows.PrepareInput) (workflows.PrepareResult, error) {
	var res workflows.PrepareResult
	err := a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		p, owned, err := lockOwned(tx, in.PublishID, in.WorkflowID)
		if err != nil {
			return err
		}
		if !owned {
			return validation("another run took over publish %s", in.PublishID)
		}
		var existing models.PublishRevision
		if err := tx.Omit("snapshot").Take(&existing, "publish_id = ? AND revision = ?", p.ID, in.Revision).Error; err == nil {
			res.Checksum = existing.Checksum
			return nil
		}
		if err := publish.ValidateTargets(store.WithTx(ctx, tx), a.Store, p); err != nil {
			if reason, ok := publish.Reason(err); ok {
				return validation("%s", reason)
			}
			return err
		}
		var snap store.BuiltSnapshot
		var rollbackOf *int
		if in.RollbackOf > 0 {
			var old models.PublishRevision
			if err := tx.Take(&old, "publish_id = ? AND revision = ?", p.ID, in.RollbackOf).Error; err != nil {
				return validation("revision %d of publish %s does not exist", in.RollbackOf, p.ID)
			}
			snap = store.BuiltSnapshot{Bytes: old.Snapshot, Checksum: old.Checksum}
			if err := tx.Raw(`SELECT kind, ref_id FROM publish_revision_uses WHERE publish_id = ? AND revision = ?`, p.ID, in.RollbackOf).Scan(&snap.Uses).Error; err != nil {
				return err
			}
			rollbackOf = &in.RollbackOf
		} else {
			snap, err = store.BuildSnapshot(ctx, tx, p)
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
		notOwned, err := store.HostsNotOwned(ctx, tx, p.TenantID, names)
		if err != nil {
			return err
		}
		if len(notOwned) > 0 {
			return validation("hostname %s is not under a domain the tenant owns (operators grant domains)", strings.Join(dedupe(notOwned), ", "))
		}
		if err := store.ClaimHosts(ctx, tx, p, hosts); errors.Is(err, store.ErrHostTaken) {
			return validation("%s", err.Error())
		} else if err != nil {
			return err
		}
		rev := models.PublishRevision{PublishID: p.ID, Revision: in.Revision, Snapshot: snap.Bytes, Checksum: snap.Checksum, RollbackOf: rollbackOf, CreatedBy: in.Actor}
		if err := tx.Create(&rev).Error; err != nil {
			return err
		}
		for _, u := range snap.Uses {
			if err := tx.Exec(`INSERT INTO publish_revision_uses (publish_id, revision, kind, ref_id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				p.ID, in.Revision, u.Kind, u.RefID).Error; err != nil {
				return err
			}
		}
		if err := tx.Model(&p).Updates(map[string]any{"status": models.PublishDeploying, "status_reason": "",
			"current_revision": in.Revision, "updated_at": time.Now().UTC()}).Error; err != nil {
			return err
		}
		res.Checksum = snap.Checksum
		msg := fmt.Sprintf("revision %d frozen (sha256 %s)", in.Revision, snap.Checksum[:12])
		if rollbackOf != nil {
			msg = fmt.Sprintf("revision %d frozen as a copy of revision %d (sha256 %s)", in.Revision, *rollbackOf, snap.Checksum[:12])
		}
		key := "frozen/" + in.WorkflowID
		return tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&models.PublishEvent{PublishID: p.ID, Type: models.PublishEventRevisionFrozen,
			Revision: in.Revision, Actor: in.Actor, Message: msg, Metadata: models.JSONMap{"checksum": snap.Checksum}, DedupeKey: &key}).Error
	})
	return res, err
}

// EnqueueDeploy hands the deploy (or withdraw) command to the agent outbox, idempotently.
func (a *Publish) EnqueueDeploy(ctx context.Context, in workflows.DeployCommandInput) (workflows.DeployCommandResult, error) {
	cid, err := uuid.Parse(in.ClusterID)
	if err != nil {
		return workflows.DeployCommandResult{}, validation("bad cluster id %q", in.ClusterID)
	}
	cmd := models.AgentCommand{ClusterID: cid, Kind: models.CommandDeploy, Priority: models.PriorityNormal,
		DedupeKey: "deploy/" + in.WorkflowID, SupersedeKey: "publish/" + in.PublishID,
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: in.PublishID, Revision: in.Revision, Checksum: in.Checksum, Action: in.Action})}
	if _, err := a.Store.EnqueueCommand(ctx, &cmd); err != nil {
		return workflows.DeployCommandResult{}, err
	}
	pid, _ := uuid.Parse(in.PublishID)
	key := "queued/" + in.WorkflowID
	_ = a.Store.AddPublishEvent(ctx, &models.PublishEvent{PublishID: pid, Type: models.PublishEventCommandQueued, Revision: in.Revision,
		Message: fmt.Sprintf("%s command queued for the agents of the cluster", in.Action), DedupeKey: &key,
		Metadata: models.JSONMap{"command_id": cmd.ID.String(), "action": in.Action}})
	return workflows.DeployCommandResult{CommandID: cmd.ID.String()}, nil
}

// ClusterPresence reports the cluster's agents and since when the offline ones are offline.
func (a *Publish) ClusterPresence(ctx context.Context, clusterID string) (workflows.ClusterPresence, error) {
	out := workflows.ClusterPresence{ClusterID: clusterID, CheckedAt: time.Now().UTC(), Agents: []workflows.AgentPresence{}}
	var name string
	if err := a.Store.DB.WithContext(ctx).Raw(`SELECT name FROM clusters WHERE id = ?`, clusterID).Scan(&name).Error; err != nil {
		return out, err
	}
	out.ClusterName = name
	var rows []struct {
		ID              uuid.UUID
		Name            string
		Status          string
		LastHeartbeatAt *time.Time
		OfflineSince    *time.Time
	}
	err := a.Store.DB.WithContext(ctx).Raw(`SELECT a.id, a.name, a.status, a.last_heartbeat_at,
			CASE WHEN a.status = 'connected' THEN NULL
			     ELSE COALESCE((SELECT max(e.created_at) FROM agent_events e WHERE e.agent_id = a.id AND e.type = 'disconnected'), a.created_at) END AS offline_since
		FROM agents a WHERE a.cluster_id = ? AND a.status <> 'revoked' ORDER BY a.name`, clusterID).Scan(&rows).Error
	for _, r := range rows {
		out.Agents = append(out.Agents, workflows.AgentPresence{AgentID: r.ID.String(), Name: r.Name, Status: r.Status,
			LastHeartbeatAt: r.LastHeartbeatAt, OfflineSince: r.OfflineSince})
	}
	return out, err
}

// FinishPublish writes a run's outcome: the status (only while the run still owns the
// publish), the timeline event, and the audit entry of the workflow's decision.
func (a *Publish) FinishPublish(ctx context.Context, in workflows.FinishInput) error {
	return a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		p, owned, err := lockOwned(tx, in.PublishID, in.WorkflowID)
		if err != nil {
			var app *temporal.ApplicationError
			if errors.As(err, &app) {
				return nil // the publish was deleted: nothing left to record
			}
			return err
		}
		if owned {
			now := time.Now().UTC()
			changes := map[string]any{"workflow_id": nil, "updated_at": now}
			if in.Status != "" {
				changes["status"] = in.Status
				changes["status_reason"] = models.Cut(in.Reason, 2000)
			}
			switch in.Status {
			case models.PublishPublished:
				changes["published_at"], changes["published_by"] = now, in.Actor
			case models.PublishWithdrawn:
				changes["withdrawn_at"], changes["withdrawn_by"], changes["withdraw_reason"] = now, in.Actor, models.Cut(in.Reason, 1000)
			}
			if err := tx.Model(&p).Updates(changes).Error; err != nil {
				return err
			}
			// A withdrawn publish, or a failed one that never served, gives its hostnames
			// back; a failed new revision of a published one may still be served by agents
			// that kept the last good one, so it keeps them.
			if in.Status == models.PublishWithdrawn || (in.Status == models.PublishFailed && p.PublishedAt == nil) {
				if err := store.ReleaseHosts(ctx, tx, p.ID); err != nil {
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
		res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&ev)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 || in.Status == "" {
			return nil // already recorded by an earlier attempt, or nothing decided
		}
		var slug string
		_ = tx.Raw(`SELECT slug FROM tenants WHERE id = ?`, p.TenantID).Scan(&slug).Error
		tid := p.TenantID
		return tx.Create(&models.AuditLog{ActorType: models.ActorWorkflow, ActorID: in.WorkflowID, ActorRoles: models.StringArray{},
			TenantID: &tid, TenantSlug: slug, Action: "product_publish." + in.Event, ResourceType: "product_publish",
			ResourceID: p.ID.String(), Summary: models.JSONMap{"revision": in.Revision, "status": in.Status, "reason": in.Reason, "requested_by": in.Actor}}).Error
	})
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
	err := a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		p, owned, err := lockOwned(tx, in.PublishID, in.WorkflowID)
		if err != nil {
			return err
		}
		if !owned {
			return validation("another run took over publish %s", in.PublishID)
		}
		res.Revision = p.CurrentRevision
		if p.CurrentRevision > 0 {
			var r models.PublishRevision
			if err := tx.Omit("snapshot").Take(&r, "publish_id = ? AND revision = ?", p.ID, p.CurrentRevision).Error; err == nil {
				res.Checksum = r.Checksum
			}
		}
		return tx.Model(&p).Updates(map[string]any{"status": models.PublishWithdrawing, "status_reason": models.Cut(in.Reason, 2000), "updated_at": time.Now().UTC()}).Error
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
