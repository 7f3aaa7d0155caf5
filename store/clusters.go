package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// ClusterView is a cluster with its agent counts.
type ClusterView struct {
	models.Cluster
	AgentCount      int        `json:"agent_count"`
	ConnectedAgents int        `json:"connected_agents"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
}

const clusterViewSelect = `clusters.*,
	(SELECT count(*) FROM agents a WHERE a.cluster_id = clusters.id AND a.status <> 'revoked') AS agent_count,
	(SELECT count(*) FROM agents a WHERE a.cluster_id = clusters.id AND a.status = 'connected') AS connected_agents,
	(SELECT max(` + agentSeen + `) FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id
		WHERE a.cluster_id = clusters.id) AS last_heartbeat_at`

// CreateCluster inserts a cluster; a taken name is ErrConflict.
func (s *Store) CreateCluster(ctx context.Context, c *models.Cluster) error {
	if c.DriftPolicy == "" {
		c.DriftPolicy = models.DriftRepair
	}
	err := s.db(ctx).Create(c).Error
	if IsUniqueViolation(err, "") {
		return fmt.Errorf("cluster %q: %w", c.Name, ErrConflict)
	}
	return err
}

// ClusterFilter filters cluster lists.
type ClusterFilter struct{ Status, Region string }

// ListClusters lists clusters newest first, with agent counts.
func (s *Store) ListClusters(ctx context.Context, f ClusterFilter, p Page) ([]ClusterView, string, error) {
	q := s.db(ctx).Table("clusters").Select(clusterViewSelect)
	q = whereSet(q, "clusters.status", f.Status)
	q = whereSet(q, "clusters.region", f.Region)
	var rows []ClusterView
	if err := Paginate(q, "clusters", p).Scan(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// GetCluster returns one cluster with agent counts.
func (s *Store) GetCluster(ctx context.Context, id uuid.UUID) (ClusterView, error) {
	var rows []ClusterView
	if err := s.db(ctx).Table("clusters").Select(clusterViewSelect).Where("clusters.id = ?", id).Scan(&rows).Error; err != nil {
		return ClusterView{}, err
	}
	if len(rows) == 0 {
		return ClusterView{}, ErrNotFound
	}
	return rows[0], nil
}

// ClusterRow returns a cluster's row alone, without GetCluster's agent counts and last heartbeat
// (which scan every agent of the cluster): what a publish's validation needs.
func (s *Store) ClusterRow(ctx context.Context, id uuid.UUID) (models.Cluster, error) {
	var c models.Cluster
	return c, notFound(s.db(ctx).Take(&c, "id = ?", id).Error)
}

// UpdateCluster applies changes (column -> value) to a cluster.
func (s *Store) UpdateCluster(ctx context.Context, id uuid.UUID, changes map[string]any) error {
	changes["updated_at"] = time.Now().UTC()
	res := s.db(ctx).Model(&models.Cluster{}).Where("id = ?", id).Updates(changes)
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	return nil
}

// ErrClusterInUse refuses to delete a cluster that still has agents or publishes.
var ErrClusterInUse = errors.New("the cluster has agents or publishes")

// DeleteCluster deletes a cluster without agents (revoked ones count too: their history
// stays until they are deleted) or publishes.
func (s *Store) DeleteCluster(ctx context.Context, id uuid.UUID) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var c models.Cluster
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&c, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		var n int64
		if err := tx.Raw(`SELECT (SELECT count(*) FROM agents WHERE cluster_id = ?) + (SELECT count(*) FROM product_publishes WHERE cluster_id = ?)`, id, id).Scan(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return ErrClusterInUse
		}
		return tx.Delete(&c).Error
	})
}

// CreateRegistrationToken stores a token (its hash) for a cluster.
func (s *Store) CreateRegistrationToken(ctx context.Context, t *models.RegistrationToken) error {
	return s.db(ctx).Create(t).Error
}

// ListRegistrationTokens lists a cluster's tokens, newest first.
func (s *Store) ListRegistrationTokens(ctx context.Context, clusterID uuid.UUID, p Page) ([]models.RegistrationToken, string, error) {
	var rows []models.RegistrationToken
	if err := Paginate(s.db(ctx).Table("registration_tokens").Where("cluster_id = ?", clusterID), "registration_tokens", p).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// RevokeRegistrationToken revokes a token of a cluster.
func (s *Store) RevokeRegistrationToken(ctx context.Context, clusterID, id uuid.UUID) (models.RegistrationToken, error) {
	var t models.RegistrationToken
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&t, "cluster_id = ? AND id = ?", clusterID, id).Error; err != nil {
			return notFound(err)
		}
		if t.RevokedAt != nil {
			return nil
		}
		now := time.Now().UTC()
		t.RevokedAt = &now
		return tx.Model(&t).Update("revoked_at", now).Error
	})
	return t, err
}

// AgentFilter filters agent lists.
type AgentFilter struct {
	ClusterID *uuid.UUID
	Status    string
}

// ListAgents lists agents newest first.
func (s *Store) ListAgents(ctx context.Context, f AgentFilter, p Page) ([]models.Agent, string, error) {
	q := shownAgents(s.db(ctx))
	q = wherePtr(q, "cluster_id", f.ClusterID)
	q = whereSet(q, "status", f.Status)
	return page[models.Agent](q, "agents", p)
}

// AgentTokenState is what an agent JWT is checked against on every request: the agent's
// status, cluster and current token generation.
type AgentTokenState struct {
	Status          string
	ClusterID       uuid.UUID
	TokenGeneration int
}

// AgentToken returns an agent's AgentTokenState from its row alone (GetAgent derives the shown
// heartbeat from the replica leases, which an authentication does not need).
func (s *Store) AgentToken(ctx context.Context, id uuid.UUID) (AgentTokenState, error) {
	// Every REST call of an agent reads this (an agent's snapshot fetch for each publish): on
	// the pool's pgx connection, past GORM (readRows).
	var st AgentTokenState
	err := s.readRow(ctx, `SELECT status, cluster_id, token_generation FROM agents WHERE id = $1`, []any{id},
		&st.Status, &st.ClusterID, &st.TokenGeneration)
	return st, err
}

// GetAgent returns one agent.
func (s *Store) GetAgent(ctx context.Context, id uuid.UUID) (models.Agent, error) {
	var a models.Agent
	return a, notFound(shownAgents(s.db(ctx)).Take(&a, "id = ?", id).Error)
}

// ListAgentEvents lists an agent's events, newest first.
func (s *Store) ListAgentEvents(ctx context.Context, agentID uuid.UUID, p Page) ([]models.AgentEvent, string, error) {
	var rows []models.AgentEvent
	if err := Paginate(s.db(ctx).Table("agent_events").Where("agent_id = ?", agentID), "agent_events", p).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// AddAgentEvent appends an event to an agent's history.
func (s *Store) AddAgentEvent(ctx context.Context, e *models.AgentEvent) error {
	if e.Metadata == nil {
		e.Metadata = models.JSONMap{}
	}
	return s.db(ctx).Create(e).Error
}

// AgentControlChannel is the NOTIFY channel that tells every api replica to act on a live
// agent stream at once: "revoke:<agent id>", "rotate:<agent id>", "delete:<agent id>".
const AgentControlChannel = "imprun_agent_control"

// RevokeAgent marks an agent revoked for good: its JWTs and refresh secret stop working and
// every replica that holds its stream closes it with REVOKED.
func (s *Store) RevokeAgent(ctx context.Context, id uuid.UUID, by string) (models.Agent, error) {
	var a models.Agent
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&a, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		if a.Status == models.AgentRevoked {
			return nil
		}
		now := time.Now().UTC()
		// A connected agent was alive as of its replica's last renewal; nothing vouches for it now.
		seen := gorm.Expr(`(SELECT ` + agentSeen + ` FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id WHERE a.id = agents.id)`)
		if err := tx.Model(&a).Updates(map[string]any{
			"status": models.AgentRevoked, "revoked_at": now, "refresh_secret_hash": nil, "last_heartbeat_at": seen,
			"token_generation": gorm.Expr("token_generation + 1"), "session_id": nil, "replica_id": nil, "updated_at": now,
		}).Error; err != nil {
			return err
		}
		if err := tx.Take(&a, "id = ?", id).Error; err != nil {
			return err
		}
		if err := tx.Create(&models.AgentEvent{AgentID: a.ID, ClusterID: a.ClusterID, Type: models.EventTokenRevoked,
			Message: "revoked by " + by, Metadata: models.JSONMap{}}).Error; err != nil {
			return err
		}
		return tx.Exec(`SELECT pg_notify(?, ?)`, AgentControlChannel, "revoke:"+a.ID.String()).Error
	})
	return a, err
}

// RotateAgentToken retires every JWT issued to the agent so far. A connected agent is sent a
// new JWT and refresh secret on its stream at once; an offline one gets them when it
// reconnects with its refresh secret.
func (s *Store) RotateAgentToken(ctx context.Context, id uuid.UUID, by string) (models.Agent, bool, error) {
	var a models.Agent
	online := false
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&a, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		if a.Status == models.AgentRevoked {
			return fmt.Errorf("agent is revoked: %w", ErrConflict)
		}
		online = a.Status == models.AgentConnected
		if err := tx.Model(&a).Updates(map[string]any{"token_generation": gorm.Expr("token_generation + 1"), "updated_at": time.Now().UTC()}).Error; err != nil {
			return err
		}
		if err := shownAgents(tx).Take(&a, "id = ?", id).Error; err != nil {
			return err
		}
		if err := tx.Create(&models.AgentEvent{AgentID: a.ID, ClusterID: a.ClusterID, Type: models.EventTokenIssued,
			Message: "token rotated by " + by, Metadata: models.JSONMap{"agent_online": online}}).Error; err != nil {
			return err
		}
		return tx.Exec(`SELECT pg_notify(?, ?)`, AgentControlChannel, "rotate:"+a.ID.String()).Error
	})
	return a, online, err
}

// DeleteAgent removes an agent and its history; a live stream of it is closed.
func (s *Store) DeleteAgent(ctx context.Context, id uuid.UUID) (models.Agent, error) {
	var a models.Agent
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&a, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		if err := tx.Delete(&a).Error; err != nil {
			return err
		}
		if err := refreshClusterStatus(tx, a.ClusterID); err != nil {
			return err
		}
		return tx.Exec(`SELECT pg_notify(?, ?)`, AgentControlChannel, "delete:"+a.ID.String()).Error
	})
	return a, err
}

// refreshClusterStatus moves a cluster between active and inactive after its agents changed:
// active while at least one agent is connected, inactive when none is (pending until the
// first agent ever registers; maintenance is the operator's and left alone).
func refreshClusterStatus(tx *gorm.DB, clusterID uuid.UUID) error {
	return tx.Exec(`UPDATE clusters c SET status = CASE
			WHEN EXISTS (SELECT 1 FROM agents a WHERE a.cluster_id = c.id AND a.status = 'connected') THEN 'active'
			ELSE 'inactive' END,
		updated_at = now()
		WHERE c.id = ? AND c.status IN ('active', 'inactive')`, clusterID).Error
}

// RefreshClusterStatus is refreshClusterStatus outside a transaction.
func (s *Store) RefreshClusterStatus(ctx context.Context, clusterID uuid.UUID) error {
	return refreshClusterStatus(s.db(ctx), clusterID)
}
