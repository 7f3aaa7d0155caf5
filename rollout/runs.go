package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/publish"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// What RolloutWorkflow's activities do, so that they repeat no rule: claim one cluster's
// publish run (the publish package's own claim, as a REST publish makes it), and record the
// run's state with the audit row of each command.

// ClaimCluster claims the cluster's publish for the rollout: its next revision (a new publish
// when the cluster has none of the product on the hostname), or for a revert the rollback to
// the previous revision (a withdraw when there was none). Busy when another run holds it.
func ClaimCluster(ctx context.Context, st *store.Store, in workflows.ClaimRolloutClusterInput) (workflows.ClaimRolloutClusterResult, error) {
	rid, err := uuid.Parse(in.RolloutID)
	if err != nil {
		return workflows.ClaimRolloutClusterResult{}, err
	}
	ro, err := st.GetRolloutByID(ctx, rid)
	if err != nil {
		return workflows.ClaimRolloutClusterResult{}, err
	}
	rec := audit.New(models.AuditLog{ActorType: models.ActorWorkflow, ActorID: ro.WorkflowID, ActorEmail: models.Cut(in.Actor, 320),
		ActorRoles: models.StringArray{"source:rollout"}, TenantID: &ro.TenantID})
	svc := &publish.Service{Store: st}
	var c publish.Claimed
	if in.Revert {
		pid, perr := uuid.Parse(in.PublishID)
		if perr != nil {
			return workflows.ClaimRolloutClusterResult{}, perr
		}
		c, err = svc.ClaimRevert(ctx, pid, in.PreviousRevision, in.Actor, "rollout "+ro.ID.String()+" aborted", rec)
	} else {
		var ch publish.Changes
		b, _ := json.Marshal(ro.Spec)
		if err := json.Unmarshal(b, &ch); err != nil {
			return workflows.ClaimRolloutClusterResult{}, err
		}
		cid := in.ClusterID
		secs := int(in.Deadline / time.Second)
		ch.ClusterID, ch.DeadlineSeconds = &cid, &secs
		c, err = svc.ClaimNext(ctx, ro.TenantID, in.Actor, ch, rec)
	}
	if errors.Is(err, publish.ErrBusy) {
		return workflows.ClaimRolloutClusterResult{Busy: true}, nil
	}
	if err != nil {
		return workflows.ClaimRolloutClusterResult{}, err
	}
	out := workflows.ClaimRolloutClusterResult{WorkflowID: c.WorkflowID, PublishID: c.Publish.ID.String(), Revision: c.Revision,
		PreviousRevision: c.Previous, Publish: c.Run, Withdraw: c.Withdraw}
	// A rollout's cluster gets its progress deadline, whatever an existing publish says.
	if out.Publish != nil {
		out.Publish.Deadline = in.Deadline
	}
	if out.Withdraw != nil {
		out.Withdraw.Deadline = in.Deadline
	}
	return out, nil
}

// SaveState writes the run's state; a command's audit row commits with it, with the command's
// actor, reason and source (rest or temporal-cli), applied or not.
func SaveState(ctx context.Context, st *store.Store, in workflows.SaveRolloutInput) error {
	rid, err := uuid.Parse(in.RolloutID)
	if err != nil {
		return nil // not a rollout this server made: nothing to write
	}
	s := in.State
	u := store.RolloutUpdate{Status: s.Status, PauseReason: s.PauseReason, Reason: s.Reason, Wave: s.Wave, Failures: s.Failures, BudgetLeft: s.BudgetLeft,
		Waiting: models.RolloutWaiting{For: s.Waiting.For, Wave: s.Waiting.Wave, Until: s.Waiting.Until}}
	if id, err := uuid.Parse(s.SupersededBy); err == nil {
		u.SupersededBy = &id
	}
	for _, c := range s.Clusters {
		cid, err := uuid.Parse(c.ClusterID)
		if err != nil {
			continue
		}
		rc := models.RolloutCluster{ClusterID: cid, Wave: c.Wave, State: c.State, Revision: c.Revision, PreviousRevision: c.PreviousRevision,
			Message: c.Message, Attempts: c.Attempts, StartedAt: c.StartedAt, DeadlineAt: c.DeadlineAt, FinishedAt: c.FinishedAt}
		if pid, err := uuid.Parse(c.PublishID); err == nil {
			rc.PublishID = &pid
		}
		u.Clusters = append(u.Clusters, rc)
	}
	var extra func(ctx context.Context) error
	if d := in.Decision; d != nil {
		extra = func(ctx context.Context) error {
			ro, err := st.GetRolloutByID(ctx, rid)
			if err != nil {
				return err
			}
			action := "rollout." + d.Verb
			summary := models.JSONMap{"reason": models.Cut(d.Command.Reason, 1000), "source": d.Command.Source, "status": map[string]string{"before": d.Before, "after": s.Status},
				"workflow_id": ro.WorkflowID}
			if d.Command.ClusterID != "" {
				summary["cluster_id"] = d.Command.ClusterID
			}
			if !d.Applied {
				action, summary["signal"], summary["problem"] = "rollout.signal_ignored", d.Verb, d.Problem
			}
			return st.InsertAudit(ctx, &models.AuditLog{ActorType: models.ActorUser, ActorID: models.Cut(d.Command.Actor, 100), ActorEmail: models.Cut(d.Command.Actor, 320),
				ActorRoles: models.StringArray{"source:" + d.Command.Source}, TenantID: &ro.TenantID, Action: action, ResourceType: "rollout",
				ResourceID: ro.ID.String(), Summary: summary})
		}
	}
	return st.SaveRolloutState(ctx, rid, u, extra)
}
