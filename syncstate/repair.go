package syncstate

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// Repairer sends an agent whose gateway drifted the desired state again, through the command
// outbox, with a timeline event and an audit entry (actor system) in the same transaction.
type Repairer struct {
	Store *store.Store
	// Every is the shortest time between two repairs of the same agent and publish: repairs
	// are deduplicated per window, so two replicas or a flapping agent cannot flood the
	// outbox.
	Every time.Duration
}

// Plan is the repair of one agent.
type Plan struct {
	Publishes   []PublishSync
	Credentials bool
}

// Empty reports whether there is nothing to repair.
func (p Plan) Empty() bool { return len(p.Publishes) == 0 && !p.Credentials }

// PlanFor lists what to send an agent again: only a live agent of a cluster whose policy is
// repair, only what drifted (a failed revision is reported, not sent in a loop).
func PlanFor(cs ClusterSync, a AgentSync) Plan {
	var p Plan
	if cs.DriftPolicy != models.DriftRepair || !a.Live {
		return p
	}
	for _, ps := range a.Publishes {
		if ps.State == Drifted {
			p.Publishes = append(p.Publishes, ps)
		}
	}
	p.Credentials = a.Credentials.State == Drifted
	return p
}

// Repair enqueues the plan for agent a of cluster clusterID. It reports false when this
// window's repair was enqueued already (by another replica).
func (r Repairer) Repair(ctx context.Context, clusterID uuid.UUID, a AgentSync, plan Plan, now time.Time) (bool, error) {
	if plan.Empty() {
		return false, nil
	}
	every := r.Every
	if every <= 0 {
		every = time.Minute
	}
	window := now.UTC().Truncate(every).Unix()
	agentID := a.AgentID
	var cmds []*models.AgentCommand
	for _, ps := range plan.Publishes {
		cmds = append(cmds, &models.AgentCommand{ClusterID: clusterID, AgentID: &agentID, Kind: models.CommandDeploy, Priority: models.PriorityRepair,
			DedupeKey:    fmt.Sprintf("repair/%s/%s/%d/%d", agentID, ps.PublishID, ps.DesiredRevision, window),
			SupersedeKey: fmt.Sprintf("repair/%s/%s", agentID, ps.PublishID),
			Payload: models.ToJSONMap(models.DeployPayload{PublishID: ps.PublishID, Revision: ps.DesiredRevision, Checksum: ps.DesiredChecksum,
				Action: ps.DesiredAction, Attempt: ps.Repairs + 1})})
	}
	created := false
	err := r.Store.InTx(ctx, func(ctx context.Context) error {
		if plan.Credentials {
			orig, err := r.Store.ClusterCredentialCommands(ctx, clusterID)
			if err != nil {
				return err
			}
			for _, c := range orig {
				cmds = append(cmds, &models.AgentCommand{ClusterID: clusterID, AgentID: &agentID, Kind: c.Kind, Priority: min(c.Priority, models.PriorityRepair),
					DedupeKey: fmt.Sprintf("repair/%s/cmd/%s/%d", agentID, c.ID, window), Payload: c.Payload})
			}
		}
		if err := r.Store.EnqueueCommands(ctx, cmds); err != nil {
			return err
		}
		var err error
		created, err = r.record(ctx, clusterID, a, plan, window)
		return err
	})
	return created, err
}

// record writes the timeline events and the audit entry of a repair, once per window.
func (r Repairer) record(ctx context.Context, clusterID uuid.UUID, a AgentSync, plan Plan, window int64) (bool, error) {
	agentID := a.AgentID
	pubs := make([]string, 0, len(plan.Publishes))
	for _, ps := range plan.Publishes {
		pid, err := uuid.Parse(ps.PublishID)
		if err != nil {
			continue
		}
		pubs = append(pubs, ps.PublishID)
		key := fmt.Sprintf("repair/%s/%s/%d/%d", agentID, ps.PublishID, ps.DesiredRevision, window)
		created, err := r.Store.AddPublishEventOnce(ctx, &models.PublishEvent{PublishID: pid, Type: models.PublishEventRepair, Revision: ps.DesiredRevision,
			Actor: models.ActorSystem, AgentID: &agentID, DedupeKey: &key,
			Message:  models.Cut(fmt.Sprintf("agent %s drifted (%s); revision %d sent again (repair %d)", a.Name, ps.Message, ps.DesiredRevision, ps.Repairs+1), 2000),
			Metadata: models.JSONMap{"cluster_id": clusterID.String(), "attempt": ps.Repairs + 1}})
		if err != nil {
			return false, err
		}
		if !created {
			return false, nil // this window's repair was recorded by another replica
		}
	}
	return true, r.Store.InsertAudit(ctx, &models.AuditLog{ActorType: models.ActorSystem, ActorID: "drift-repair", Action: "agent.drift_repair",
		ResourceType: "agent", ResourceID: agentID.String(), ResourceName: models.Cut(a.Name, 255), Method: "", Path: "", StatusCode: 0,
		Summary: models.JSONMap{"cluster_id": clusterID.String(), "publishes": pubs, "credentials": plan.Credentials}})
}
