package store

import (
	"context"

	"github.com/google/uuid"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// What the credential sync activities read and write: where a credential version must be,
// and which clusters confirmed it.

// SubscriptionGrant is one active subscription of an app as a credential carries it: the
// publish, its cluster, and the plan's limits.
type SubscriptionGrant struct {
	PublishID uuid.UUID
	PlanID    *uuid.UUID
	ClusterID uuid.UUID
	RateLimit models.JSON[*models.PlanRateLimit]
	Quota     models.JSON[*models.PlanQuota]
}

// ActiveGrants lists the active subscriptions of an app, oldest first.
func (s *Store) ActiveGrants(ctx context.Context, appID uuid.UUID) ([]SubscriptionGrant, error) {
	var rows []SubscriptionGrant
	err := s.db(ctx).Raw(`SELECT s.product_publish_id AS publish_id, s.plan_id, pp.cluster_id, pl.rate_limit, pl.quota
		FROM subscriptions s JOIN product_publishes pp ON pp.id = s.product_publish_id LEFT JOIN plans pl ON pl.id = s.plan_id
		WHERE s.client_app_id = ? AND s.status = 'active' ORDER BY s.created_at, s.id`, appID).Scan(&rows).Error
	return rows, err
}

// RolloutClusters lists every cluster a credential was ever sent to (or revoked from).
func (s *Store) RolloutClusters(ctx context.Context, credentialID uuid.UUID) ([]uuid.UUID, error) {
	var out []uuid.UUID
	err := s.db(ctx).Raw(`SELECT cluster_id FROM credential_rollouts WHERE credential_id = ?`, credentialID).Scan(&out).Error
	return out, err
}

// PlannedRollout is the command that puts a credential version on (or takes it off) a cluster.
type PlannedRollout struct {
	ClusterID uuid.UUID
	Action    string // models.RolloutUpsert or models.RolloutRevoke
	CommandID uuid.UUID
}

// PlanRollouts records, in one statement, that each planned cluster waits for the version's
// command. The rollout row follows the newest version only: an older run re-planning can't
// overwrite a newer version's row.
func (s *Store) PlanRollouts(ctx context.Context, credentialID uuid.UUID, version int64, plan []PlannedRollout) error {
	clusters := make([]string, len(plan))
	actions := make([]string, len(plan))
	commands := make([]string, len(plan))
	for i, p := range plan {
		clusters[i], actions[i], commands[i] = p.ClusterID.String(), p.Action, p.CommandID.String()
	}
	return s.db(ctx).Exec(`INSERT INTO credential_rollouts (credential_id, cluster_id, version, action, command_id, status, queued_at)
		SELECT ?, v.cluster_id, ?, v.action, v.command_id, 'pending', now()
		FROM unnest(?::uuid[], ?::text[], ?::uuid[]) AS v(cluster_id, action, command_id)
		ON CONFLICT (credential_id, cluster_id) DO UPDATE SET version = excluded.version, action = excluded.action,
			command_id = excluded.command_id, status = 'pending', queued_at = now(), confirmed_at = NULL, confirmed_by = NULL
		WHERE credential_rollouts.version < excluded.version`,
		credentialID, version, models.StringArray(clusters), models.StringArray(actions), models.StringArray(commands)).Error
}

// ClusterRollout is a credential's rollout row on one cluster, with the cluster's name.
type ClusterRollout struct {
	models.CredentialRollout
	ClusterName string
}

// RolloutsOn returns a credential's rollout rows on the given clusters.
func (s *Store) RolloutsOn(ctx context.Context, credentialID uuid.UUID, clusters []uuid.UUID) ([]ClusterRollout, error) {
	ids := make([]string, len(clusters))
	for i, c := range clusters {
		ids[i] = c.String()
	}
	var rows []ClusterRollout
	err := s.db(ctx).Raw(`SELECT r.*, cl.name AS cluster_name FROM credential_rollouts r JOIN clusters cl ON cl.id = r.cluster_id
		WHERE r.credential_id = ? AND r.cluster_id = ANY(?::uuid[])`, credentialID, models.StringArray(ids)).Scan(&rows).Error
	return rows, err
}

// RolloutConfirmation says that an agent of a cluster applied a rollout's command. AgentID
// may be nil (not known).
type RolloutConfirmation struct {
	ClusterID, CommandID uuid.UUID
	AgentID              *uuid.UUID
}

// ConfirmRollout marks one cluster of a credential version's rollout confirmed, if the row
// still waits for that command.
func (s *Store) ConfirmRollout(ctx context.Context, credentialID uuid.UUID, version int64, c RolloutConfirmation) ([]ConfirmedRollout, error) {
	var out []ConfirmedRollout
	err := s.db(ctx).Raw(`UPDATE credential_rollouts SET status = 'confirmed', confirmed_at = now(), confirmed_by = ?
		WHERE credential_id = ? AND cluster_id = ? AND version = ? AND command_id = ? AND status = 'pending'
		RETURNING action, extract(epoch FROM confirmed_at - queued_at) AS seconds`,
		c.AgentID, credentialID, c.ClusterID, version, c.CommandID).Scan(&out).Error
	return out, err
}

// ConfirmedRollout is one cluster's rollout that a confirmation ended: its action and how long
// it took from being queued.
type ConfirmedRollout struct {
	Action  string
	Seconds float64
}

// ConfirmRollouts marks several clusters of a credential version's rollout confirmed in one
// statement. A row that a newer version (or another command) took over is left alone.
func (s *Store) ConfirmRollouts(ctx context.Context, credentialID uuid.UUID, version int64, cs []RolloutConfirmation) ([]ConfirmedRollout, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	clusters := make([]string, len(cs))
	commands := make([]string, len(cs))
	agents := make([]string, len(cs))
	for i, c := range cs {
		clusters[i], commands[i] = c.ClusterID.String(), c.CommandID.String()
		if c.AgentID != nil {
			agents[i] = c.AgentID.String()
		}
	}
	var out []ConfirmedRollout
	err := s.db(ctx).Raw(`UPDATE credential_rollouts r SET status = 'confirmed', confirmed_at = now(),
			confirmed_by = nullif(v.agent_id, '')::uuid
		FROM unnest(?::uuid[], ?::uuid[], ?::text[]) AS v(cluster_id, command_id, agent_id)
		WHERE r.credential_id = ? AND r.cluster_id = v.cluster_id AND r.version = ? AND r.command_id = v.command_id AND r.status = 'pending'
		RETURNING r.action, extract(epoch FROM r.confirmed_at - r.queued_at) AS seconds`,
		models.StringArray(clusters), models.StringArray(commands), models.StringArray(agents), credentialID, version).Scan(&out).Error
	return out, err
}

// InsertAuditOnce appends an audit entry unless it conflicts with one that exists (an entry
// a retried activity wrote already).
func (s *Store) InsertAuditOnce(ctx context.Context, a *models.AuditLog) error {
	return s.db(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(a).Error
}
