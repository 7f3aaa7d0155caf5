package store

import (
	"context"
)

// Backlog is what waits longer than it should, as the worker exports it for alerts: publishes
// still deploying, revocations not yet confirmed by a cluster, and agent commands no agent has
// acknowledged. Ages are in seconds (0 when nothing waits).
type Backlog struct {
	PublishesDeploying          int64
	OldestDeployingSeconds      float64
	RevocationsUnconfirmed      int64
	OldestRevocationSeconds     float64
	CommandsUnacknowledged      int64
	OldestUnacknowledgedSeconds float64
	// Clusters holds every active cluster with its number of connected agents (0 included).
	Clusters []ClusterAgents `gorm:"-"`
}

// ClusterAgents is one cluster's count of connected agents.
type ClusterAgents struct {
	Cluster   string
	Connected int64
}

// ReadBacklog reads the Backlog in two statements. The command count uses the pending index
// (commands not superseded); a command counts as acknowledged when any agent acknowledged it.
func (s *Store) ReadBacklog(ctx context.Context) (Backlog, error) {
	var b Backlog
	err := s.db(ctx).Raw(`
SELECT
  (SELECT count(*) FROM product_publishes WHERE status = 'DEPLOYING') AS publishes_deploying,
  (SELECT coalesce(extract(epoch FROM now() - min(updated_at)), 0) FROM product_publishes WHERE status = 'DEPLOYING') AS oldest_deploying_seconds,
  (SELECT count(*) FROM credential_rollouts WHERE status = 'pending' AND action = 'revoke') AS revocations_unconfirmed,
  (SELECT coalesce(extract(epoch FROM now() - min(queued_at)), 0) FROM credential_rollouts WHERE status = 'pending' AND action = 'revoke') AS oldest_revocation_seconds,
  u.n AS commands_unacknowledged, u.oldest AS oldest_unacknowledged_seconds
FROM (SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(c.created_at)), 0) AS oldest
      FROM agent_commands c
      WHERE c.superseded_at IS NULL AND c.kind IN ('deploy', 'credential_upsert', 'credential_revoke')
        AND NOT EXISTS (SELECT 1 FROM agent_command_deliveries d WHERE d.command_id = c.id AND d.status = 'acked')) u`).
		Scan(&b).Error
	if err != nil {
		return b, err
	}
	err = s.db(ctx).Raw(`SELECT c.name AS cluster, count(a.id) AS connected FROM clusters c
LEFT JOIN agents a ON a.cluster_id = c.id AND a.status = 'connected'
WHERE c.status = 'active' GROUP BY c.name ORDER BY c.name`).Scan(&b.Clusters).Error
	return b, err
}
