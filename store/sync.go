package store

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
)

// SyncInputs is what the control plane knows about one cluster to tell, per agent and publish,
// whether the gateway serves what it should (package syncstate computes it).
type SyncInputs struct {
	Cluster models.Cluster
	// Agents are the cluster's agents that are not revoked.
	Agents []models.Agent
	// Deploys are the deploy commands that say what the cluster should run: the current
	// command of every publish (cluster-wide) and the current repair of each agent and publish.
	Deploys []DeployIntent
	// Deliveries are the deliveries of Deploys, per agent.
	Deliveries []DeployDelivery
	// Credentials are the credential versions the cluster's agents must hold (upserted, not
	// revoked), and CredentialsPending, per agent, how many credential commands it has not
	// acknowledged yet.
	Credentials        []CredentialVersion
	CredentialsPending map[uuid.UUID]int
}

// DeployIntent is one deploy command as the sync computation reads it.
type DeployIntent struct {
	CommandID uuid.UUID
	AgentID   *uuid.UUID // nil: the cluster-wide command; set: a repair for one agent
	PublishID string
	Revision  int
	Checksum  string
	Action    string
	CreatedAt time.Time
	// Attempt numbers the repairs of one revision on one agent (0 for the cluster command).
	Attempt int
}

// DeployDelivery is the delivery of a deploy command to one agent.
type DeployDelivery struct {
	CommandID    uuid.UUID
	AgentID      uuid.UUID
	Status       string
	AckedAt      *time.Time
	ResultStatus string
	Message      string
}

// CredentialVersion is one credential at the version a cluster's agents must hold.
type CredentialVersion struct {
	CredentialID uuid.UUID
	Version      int64
}

// ClusterSyncInputs loads the sync inputs of a cluster in a handful of statements, whatever
// the number of agents and publishes.
func (s *Store) ClusterSyncInputs(ctx context.Context, clusterID uuid.UUID) (SyncInputs, error) {
	return s.syncInputs(ctx, clusterID, nil)
}

// AgentSyncInputs loads the sync inputs of one agent: the cluster's desired state, and of its
// agents only that one (its row, its repairs, its deliveries, its pending credential
// commands). An agent's sync state depends on nothing else, and its connect then costs the
// same in a cluster of three agents or of 100,000 (loading the whole cluster on every connect
// made a fleet's reconnect quadratic).
func (s *Store) AgentSyncInputs(ctx context.Context, clusterID, agentID uuid.UUID) (SyncInputs, error) {
	return s.syncInputs(ctx, clusterID, &agentID)
}

// syncInputs loads the inputs of the cluster's agents, or of the one agent when agentID is set.
func (s *Store) syncInputs(ctx context.Context, clusterID uuid.UUID, agentID *uuid.UUID) (SyncInputs, error) {
	var in SyncInputs
	var err error
	if in.Cluster, err = s.ClusterRow(ctx, clusterID); err != nil {
		return in, err
	}
	db := s.db(ctx)
	// only narrows a statement to the agent: the condition on col, and its argument.
	only := func(col string) (string, []any) {
		if agentID == nil {
			return "", nil
		}
		return " AND " + col + " = ?", []any{*agentID}
	}
	agents := shownAgents(db).Where("cluster_id = ? AND status <> ?", clusterID, models.AgentRevoked)
	if agentID != nil {
		agents = agents.Where("id = ?", *agentID)
	}
	if err := agents.Order("name").Find(&in.Agents).Error; err != nil {
		return in, err
	}
	cond, args := only("c.agent_id")
	if err := db.Raw(`SELECT c.id AS command_id, c.agent_id, c.payload->>'publish_id' AS publish_id,
			coalesce((c.payload->>'revision')::int, 0) AS revision, coalesce(c.payload->>'checksum', '') AS checksum,
			coalesce(c.payload->>'action', '') AS action, c.created_at, coalesce((c.payload->>'attempt')::int, 0) AS attempt
		FROM agent_commands c
		WHERE c.cluster_id = ? AND c.kind = 'deploy' AND c.superseded_at IS NULL
		  AND ((c.agent_id IS NULL AND c.supersede_key LIKE 'publish/%') OR (c.agent_id IS NOT NULL AND c.supersede_key LIKE 'repair/%'`+cond+`))`,
		append([]any{clusterID}, args...)...).Scan(&in.Deploys).Error; err != nil {
		return in, err
	}
	cond, args = only("d.agent_id")
	if err := db.Raw(`SELECT d.command_id, d.agent_id, d.status, d.acked_at, d.result_status, coalesce(d.result->>'message', '') AS message
		FROM agent_commands c JOIN agent_command_deliveries d ON d.command_id = c.id
		WHERE c.cluster_id = ? AND c.kind = 'deploy' AND c.superseded_at IS NULL`+cond,
		append([]any{clusterID}, args...)...).Scan(&in.Deliveries).Error; err != nil {
		return in, err
	}
	if err := db.Raw(`SELECT credential_id, version FROM credential_rollouts WHERE cluster_id = ? AND action = 'upsert' ORDER BY credential_id`,
		clusterID).Scan(&in.Credentials).Error; err != nil {
		return in, err
	}
	var pending []struct {
		AgentID uuid.UUID
		N       int
	}
	cond, args = only("a.id")
	if err := db.Raw(`SELECT a.id AS agent_id, count(*) AS n FROM agents a
		JOIN agent_commands c ON c.cluster_id = a.cluster_id AND (c.agent_id IS NULL OR c.agent_id = a.id)
		WHERE a.cluster_id = ? AND a.status <> 'revoked' AND c.superseded_at IS NULL AND c.kind IN ('credential_upsert', 'credential_revoke')
		  AND NOT EXISTS (SELECT 1 FROM agent_command_deliveries d WHERE d.command_id = c.id AND d.agent_id = a.id AND d.status = 'acked')`+cond+`
		GROUP BY a.id`, append([]any{clusterID}, args...)...).Scan(&pending).Error; err != nil {
		return in, err
	}
	in.CredentialsPending = make(map[uuid.UUID]int, len(pending))
	for _, p := range pending {
		in.CredentialsPending[p.AgentID] = p.N
	}
	return in, nil
}

// ClusterCredentialCommands returns the command that carried the current rollout of every
// credential of a cluster (upserts and revocations), so that a repair can send an agent the
// whole credential set again.
func (s *Store) ClusterCredentialCommands(ctx context.Context, clusterID uuid.UUID) ([]models.AgentCommand, error) {
	var rows []models.AgentCommand
	err := s.db(ctx).Raw(`SELECT c.* FROM credential_rollouts r JOIN agent_commands c ON c.id = r.command_id
		WHERE r.cluster_id = ? ORDER BY c.priority, c.created_at, c.id`, clusterID).Scan(&rows).Error
	return rows, err
}

// ClusterIDs lists every cluster id (for the sync gauges).
func (s *Store) ClusterIDs(ctx context.Context) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	err := s.db(ctx).Raw(`SELECT id FROM clusters ORDER BY created_at, id`).Scan(&ids).Error
	return ids, err
}
