package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// What the publish and withdraw activities write. Run them in InTx after LockPublish: the
// publish row's lock and its workflow_id are what fence a run that another one took over.

// LockPublish returns a publish of any tenant locked until the transaction of InTx ends. The
// lock is FOR NO KEY UPDATE: it keeps out every other writer of the row, but not the foreign-
// key checks of rows that reference it (its timeline events, revisions, host claims), which
// a FOR UPDATE lock made wait for the holder's commit.
func (s *Store) LockPublish(ctx context.Context, id uuid.UUID) (models.ProductPublish, error) {
	var p models.ProductPublish
	return p, notFound(s.db(ctx).Clauses(clause.Locking{Strength: "NO KEY UPDATE"}).Take(&p, "id = ?", id).Error)
}

// LockPublishRevision is LockPublish that also says, in the same statement, whether the
// publish has revision frozen and with which checksum (a retried freeze finds its revision).
func (s *Store) LockPublishRevision(ctx context.Context, id uuid.UUID, revision int) (p models.ProductPublish, checksum string, frozen bool, err error) {
	var rows []lockedPublish
	err = s.db(ctx).Raw(`SELECT p.*, r.checksum AS frozen_checksum FROM product_publishes p
		LEFT JOIN publish_revisions r ON r.publish_id = p.id AND r.revision = ?
		WHERE p.id = ? FOR NO KEY UPDATE OF p`, revision, id).Scan(&rows).Error
	if err != nil {
		return p, "", false, err
	}
	if len(rows) == 0 {
		return p, "", false, ErrNotFound
	}
	r := rows[0]
	if r.FrozenChecksum == nil {
		return r.ProductPublish, "", false, nil
	}
	return r.ProductPublish, *r.FrozenChecksum, true, nil
}

// lockedPublish is a row of LockPublishRevision.
type lockedPublish struct {
	models.ProductPublish
	FrozenChecksum *string
}

// BuildSnapshot is the function of the same name on the store's database (or the transaction
// of InTx).
func (s *Store) BuildSnapshot(ctx context.Context, p models.ProductPublish, src SnapshotSource) (BuiltSnapshot, error) {
	return BuildSnapshot(ctx, s.db(ctx), p, src)
}

// RevisionChecksum returns the checksum of a frozen revision; found is false when the
// publish has no such revision.
func (s *Store) RevisionChecksum(ctx context.Context, publishID uuid.UUID, revision int) (checksum string, found bool, err error) {
	var r models.PublishRevision
	err = notFound(s.db(ctx).Omit("snapshot").Take(&r, "publish_id = ? AND revision = ?", publishID, revision).Error)
	if err == ErrNotFound {
		return "", false, nil
	}
	return r.Checksum, err == nil, err
}

// RevisionUses lists the catalog rows a frozen revision uses.
func (s *Store) RevisionUses(ctx context.Context, publishID uuid.UUID, revision int) ([]RevisionUse, error) {
	var uses []RevisionUse
	err := s.db(ctx).Raw(`SELECT kind, ref_id FROM publish_revision_uses WHERE publish_id = ? AND revision = ?`, publishID, revision).Scan(&uses).Error
	return uses, err
}

// FreezeRevision stores a revision's snapshot with what it uses and sets the publish DEPLOYING
// at that revision (clearing its status reason), in one statement; p is updated to match.
func (s *Store) FreezeRevision(ctx context.Context, p *models.ProductPublish, rev *models.PublishRevision, uses []RevisionUse) error {
	now := time.Now().UTC()
	if rev.CreatedAt.IsZero() {
		rev.CreatedAt = now
	}
	kinds, refs := make([]string, len(uses)), make([]uuid.UUID, len(uses))
	for i, u := range uses {
		kinds[i], refs[i] = u.Kind, u.RefID
	}
	err := s.execDirect(ctx, `WITH rev AS (
			INSERT INTO publish_revisions (publish_id, revision, snapshot, checksum, rollback_of, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING publish_id, revision
		), used AS (
			INSERT INTO publish_revision_uses (publish_id, revision, kind, ref_id)
			SELECT rev.publish_id, rev.revision, v.kind, v.ref_id FROM rev, unnest($8::text[], $9::uuid[]) AS v(kind, ref_id)
			ON CONFLICT DO NOTHING
		)
		UPDATE product_publishes SET status = $10, status_reason = '', current_revision = $2, updated_at = $11 WHERE id = $1`,
		rev.PublishID, rev.Revision, rev.Snapshot, rev.Checksum, rev.RollbackOf, rev.CreatedBy, rev.CreatedAt, kinds, refs,
		models.PublishDeploying, now)
	if err != nil {
		return err
	}
	p.Status, p.StatusReason, p.CurrentRevision, p.UpdatedAt = models.PublishDeploying, "", rev.Revision, now
	return nil
}

// MarkPublishWithdrawing sets the publish WITHDRAWING with reason.
func (s *Store) MarkPublishWithdrawing(ctx context.Context, p *models.ProductPublish, reason string) error {
	return s.db(ctx).Model(p).Updates(map[string]any{"status": models.PublishWithdrawing, "status_reason": models.Cut(reason, 2000),
		"updated_at": time.Now().UTC()}).Error
}

// PublishOutcome is what a publish or withdraw run decided.
type PublishOutcome struct {
	// Status is the new status; empty keeps the status (the run only lets go of the publish).
	Status string
	Reason string
	Actor  string
}

// RecordPublishOutcome lets the run go of the publish (workflow_id cleared) and writes its
// outcome: the status and reason, and who published or withdrew it when.
func (s *Store) RecordPublishOutcome(ctx context.Context, p *models.ProductPublish, o PublishOutcome) error {
	now := time.Now().UTC()
	changes := map[string]any{"workflow_id": nil, "updated_at": now}
	if o.Status != "" {
		changes["status"] = o.Status
		changes["status_reason"] = models.Cut(o.Reason, 2000)
	}
	switch o.Status {
	case models.PublishPublished:
		changes["published_at"], changes["published_by"] = now, o.Actor
	case models.PublishWithdrawn:
		changes["withdrawn_at"], changes["withdrawn_by"], changes["withdraw_reason"] = now, o.Actor, models.Cut(o.Reason, 1000)
	}
	return s.db(ctx).Model(p).Updates(changes).Error
}

// AddPublishEventOnce appends a timeline event unless one with its DedupeKey exists; added
// says whether this call wrote it.
func (s *Store) AddPublishEventOnce(ctx context.Context, e *models.PublishEvent) (added bool, err error) {
	if e.Metadata == nil {
		e.Metadata = models.JSONMap{}
	}
	res := s.db(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(e)
	return res.RowsAffected > 0, res.Error
}

// TenantSlug returns a tenant's slug, "" when there is no such tenant.
func (s *Store) TenantSlug(ctx context.Context, id uuid.UUID) (string, error) {
	// A tenant's slug is set when it is created and never changed, so it is read once (a
	// run's outcome is audited with it: one statement per publish).
	if v, ok := s.slugs.Load(id); ok {
		return v.(string), nil
	}
	var slug string
	err := s.readRow(ctx, `SELECT slug FROM tenants WHERE id = $1`, []any{id}, &slug)
	if errors.Is(err, ErrNotFound) {
		return "", nil // as before: no row scans nothing
	}
	if err == nil {
		s.slugs.Store(id, slug)
	}
	return slug, err
}

// ClusterName returns a cluster's name, "" when there is no such cluster.
func (s *Store) ClusterName(ctx context.Context, id uuid.UUID) (string, error) {
	// Every agent connect asks (readRow, past GORM: 4 KB of garbage a connect through it).
	var name string
	err := s.readRow(ctx, `SELECT name FROM clusters WHERE id = $1`, []any{id}, &name)
	if errors.Is(err, ErrNotFound) {
		return "", nil // as before: no row scans nothing
	}
	return name, err
}

// AgentPresence is one agent of a cluster as a publish run reports it.
type AgentPresence struct {
	ID              uuid.UUID
	Name            string
	Status          string
	LastHeartbeatAt *time.Time
	// OfflineSince is when a not connected agent was last seen going away (its creation when
	// it never connected); nil while it is connected.
	OfflineSince *time.Time
}

// ClusterAgentPresence lists the cluster's agents that are not revoked, by name.
func (s *Store) ClusterAgentPresence(ctx context.Context, clusterID uuid.UUID) ([]AgentPresence, error) {
	var rows []AgentPresence
	err := s.db(ctx).Raw(`SELECT a.id, a.name, a.status, `+agentSeen+` AS last_heartbeat_at,
			CASE WHEN a.status = 'connected' THEN NULL
			     ELSE COALESCE((SELECT max(e.created_at) FROM agent_events e WHERE e.agent_id = a.id AND e.type = 'disconnected'), a.created_at) END AS offline_since
		FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id
		WHERE a.cluster_id = ? AND a.status <> 'revoked' ORDER BY a.name`, clusterID).Scan(&rows).Error
	return rows, err
}
