package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/egress"
	"github.com/imprun/imprun-server/models"
)

// PublishFilter filters publish lists.
type PublishFilter struct {
	ProductID, ClusterID *uuid.UUID
	Environment, Status  string
}

// CreatePublish inserts a DRAFT publish and its "created" event.
func (s *Store) CreatePublish(ctx context.Context, p *models.ProductPublish) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := insertDraft(tx, p); err != nil {
			return err
		}
		return addPublishEvent(tx, &models.PublishEvent{PublishID: p.ID, Type: models.PublishEventCreated, Actor: p.CreatedBy})
	})
}

// CreateClaimedPublish is CreatePublish and ClaimPublish of the new row in one: the DRAFT
// publish is inserted, claimed by c's run (no read back and lock of a row no one else can see
// yet, and none of ClaimPublish's state checks, which a new DRAFT at revision 0 passes), and
// its "created" event and c's go in one statement. It returns the publish as it was before
// the claim (no workflow_id), as ClaimPublish does.
func (s *Store) CreateClaimedPublish(ctx context.Context, p *models.ProductPublish, c Claim) (models.ProductPublish, error) {
	var before models.ProductPublish
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		// The row goes in claimed; before is it as it would be without the claim.
		now := time.Now().UTC()
		wid := c.WorkflowID
		p.WorkflowID, p.ClaimedAt = &wid, &now
		if err := insertPublish(tx, p, "published_at", "withdrawn_at"); err != nil {
			return err
		}
		before = *p
		before.WorkflowID, before.ClaimedAt = nil, nil
		// The two events share a statement, so each gets its own time to keep the timeline's
		// order (created first).
		c.Event.PublishID, c.Event.CreatedAt = p.ID, now.Add(time.Microsecond)
		return s.addPublishEvents(ctx, tx, []models.PublishEvent{{PublishID: p.ID, Type: models.PublishEventCreated, Actor: p.CreatedBy, CreatedAt: now}, c.Event})
	})
	return before, err
}

// insertDraft inserts p as a DRAFT publish.
func insertDraft(tx *gorm.DB, p *models.ProductPublish) error {
	return insertPublish(tx, p, "workflow_id", "claimed_at", "published_at", "withdrawn_at")
}

// insertPublish inserts p as a DRAFT publish, without the columns omitted.
func insertPublish(tx *gorm.DB, p *models.ProductPublish, omit ...string) error {
	p.Status = models.PublishDraft
	if p.AuthConfig == nil {
		p.AuthConfig = models.JSONMap{}
	}
	return tx.Omit(omit...).Create(p).Error
}

// GetPublish returns a publish of a tenant.
func (s *Store) GetPublish(ctx context.Context, tenantID, id uuid.UUID) (models.ProductPublish, error) {
	var p models.ProductPublish
	return p, notFound(s.db(ctx).Take(&p, "tenant_id = ? AND id = ?", tenantID, id).Error)
}

// GetPublishByID returns a publish of any tenant (activities, the agent REST API).
func (s *Store) GetPublishByID(ctx context.Context, id uuid.UUID) (models.ProductPublish, error) {
	var p models.ProductPublish
	return p, notFound(s.db(ctx).Take(&p, "id = ?", id).Error)
}

// ListPublishes lists a tenant's publishes, newest first.
func (s *Store) ListPublishes(ctx context.Context, tenantID uuid.UUID, f PublishFilter, p Page) ([]models.ProductPublish, string, error) {
	q := s.db(ctx).Table("product_publishes").Where("tenant_id = ?", tenantID)
	q = wherePtr(q, "product_id", f.ProductID)
	q = wherePtr(q, "cluster_id", f.ClusterID)
	q = whereSet(q, "environment", f.Environment)
	q = whereSet(q, "status", f.Status)
	return page[models.ProductPublish](q, "product_publishes", p)
}

// StateError refuses an action in the publish's current state (409 with the status).
type StateError struct {
	Status string
	Detail string
}

func (e *StateError) Error() string { return e.Detail }

// UpdateDraft changes a DRAFT publish with apply, which validates.
func (s *Store) UpdateDraft(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.ProductPublish) error) (models.ProductPublish, error) {
	var p models.ProductPublish
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&p, "tenant_id = ? AND id = ?", tenantID, id).Error; err != nil {
			return notFound(err)
		}
		if p.Status != models.PublishDraft || p.WorkflowID != nil {
			return &StateError{Status: p.Status, Detail: "only a DRAFT publish can be edited"}
		}
		if err := apply(&p); err != nil {
			return err
		}
		p.UpdatedAt = time.Now().UTC()
		if err := tx.Omit("workflow_id", "created_at").Save(&p).Error; err != nil {
			return err
		}
		return addPublishEvent(tx, &models.PublishEvent{PublishID: p.ID, Type: models.PublishEventUpdated, Actor: p.CreatedBy})
	})
	return p, err
}

// DeletePublish deletes a DRAFT or WITHDRAWN publish with no run in flight.
func (s *Store) DeletePublish(ctx context.Context, tenantID, id uuid.UUID) (models.ProductPublish, error) {
	var p models.ProductPublish
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&p, "tenant_id = ? AND id = ?", tenantID, id).Error; err != nil {
			return notFound(err)
		}
		if (p.Status != models.PublishDraft && p.Status != models.PublishWithdrawn) || p.WorkflowID != nil {
			return &StateError{Status: p.Status, Detail: "only a DRAFT or WITHDRAWN publish can be deleted"}
		}
		return tx.Delete(&p).Error
	})
	return p, err
}

// Claim describes which run may take a publish.
type Claim struct {
	WorkflowID string
	// Statuses the publish must be in.
	Statuses []string
	// TakeOverPrefix lets the claim replace a run in flight whose id has this prefix (a
	// withdraw takes over from a deploy); empty requires no run in flight.
	TakeOverPrefix string
	// ExpectRevision, when set, must equal the publish's current revision (the caller derived
	// the run's id from it).
	ExpectRevision *int
	Event          models.PublishEvent
}

// ClaimPublish reserves the publish for one workflow run: the row is locked, its status
// checked and workflow_id set, in one transaction, so two racing requests get one run. It
// returns the publish as it was (its previous workflow_id tells a withdraw what to cancel).
func (s *Store) ClaimPublish(ctx context.Context, tenantID, id uuid.UUID, c Claim) (models.ProductPublish, error) {
	var p models.ProductPublish
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "NO KEY UPDATE"}).Take(&p, "tenant_id = ? AND id = ?", tenantID, id).Error; err != nil {
			return notFound(err)
		}
		takeover := p.WorkflowID != nil && c.TakeOverPrefix != "" && strings.HasPrefix(*p.WorkflowID, c.TakeOverPrefix)
		if p.WorkflowID != nil && !takeover {
			return &StateError{Status: p.Status, Detail: "a workflow run is in flight for this publish (" + *p.WorkflowID + ")"}
		}
		ok := takeover
		for _, st := range c.Statuses {
			if p.Status == st {
				ok = true
			}
		}
		if !ok {
			return &StateError{Status: p.Status, Detail: fmt.Sprintf("not allowed while the publish is %s", p.Status)}
		}
		if c.ExpectRevision != nil && *c.ExpectRevision != p.CurrentRevision {
			return &StateError{Status: p.Status, Detail: "the publish changed meanwhile; retry"}
		}
		// The caller needs the run being replaced, so p keeps the previous workflow_id.
		if err := tx.Exec(`UPDATE product_publishes SET workflow_id = ?, claimed_at = now() WHERE id = ?`, c.WorkflowID, p.ID).Error; err != nil {
			return err
		}
		c.Event.PublishID = p.ID
		return addPublishEvent(tx, &c.Event)
	})
	return p, err
}

// ReleasePublish undoes a claim whose run could not be started.
func (s *Store) ReleasePublish(ctx context.Context, id uuid.UUID, workflowID string, previous *string) error {
	return s.db(ctx).Exec(`UPDATE product_publishes SET workflow_id = ? WHERE id = ? AND workflow_id = ?`, previous, id, workflowID).Error
}

// ClaimedPublish is a publish held by a workflow run.
type ClaimedPublish struct {
	ID         uuid.UUID
	WorkflowID string
	Status     string
}

// OldClaims lists publishes claimed by a run at least olderThan ago (claims from before
// claimed_at was recorded count as old).
func (s *Store) OldClaims(ctx context.Context, olderThan time.Duration, limit int) ([]ClaimedPublish, error) {
	var out []ClaimedPublish
	err := s.db(ctx).Raw(`SELECT id, workflow_id, status FROM product_publishes
		WHERE workflow_id IS NOT NULL AND COALESCE(claimed_at, '-infinity') < ? ORDER BY claimed_at NULLS FIRST LIMIT ?`,
		time.Now().Add(-olderThan), limit).Scan(&out).Error
	return out, err
}

// ReleaseOrphanClaim frees a publish whose claiming run does not exist or has ended without
// writing its outcome: a deploy or withdraw it had begun is FAILED with reason, anything else
// keeps its status; a timeline event says so. It changes nothing if the claim moved on.
func (s *Store) ReleaseOrphanClaim(ctx context.Context, id uuid.UUID, workflowID, reason string) (bool, error) {
	released := false
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var p models.ProductPublish
		if err := tx.Clauses(clause.Locking{Strength: "NO KEY UPDATE"}).Take(&p, "id = ? AND workflow_id = ?", id, workflowID).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return nil
			}
			return err
		}
		changes := map[string]any{"workflow_id": nil, "updated_at": time.Now().UTC()}
		if p.Status == models.PublishDeploying || p.Status == models.PublishWithdrawing {
			changes["status"], changes["status_reason"] = models.PublishFailed, models.Cut(reason, 2000)
			if p.PublishedAt == nil {
				if err := releaseHosts(ctx, tx, p.ID); err != nil {
					return err
				}
			}
		}
		if err := tx.Model(&p).Updates(changes).Error; err != nil {
			return err
		}
		key := "orphan/" + workflowID
		released = true
		return addPublishEvent(tx, &models.PublishEvent{PublishID: p.ID, Type: models.PublishEventOrphanReleased, Revision: p.CurrentRevision,
			Actor: "reconciler", Message: models.Cut(reason, 2000), DedupeKey: &key, Metadata: models.JSONMap{"workflow_id": workflowID, "status_before": p.Status}})
	})
	return released, err
}

// AddPublishEvent appends a timeline event; one with a DedupeKey is written at most once.
func (s *Store) AddPublishEvent(ctx context.Context, e *models.PublishEvent) error {
	return addPublishEvent(s.db(ctx), e)
}

// AddPublishEvents appends timeline events in one statement; each with a DedupeKey is written
// at most once.
func (s *Store) AddPublishEvents(ctx context.Context, es []models.PublishEvent) error {
	if len(es) == 0 {
		return nil
	}
	return s.addPublishEvents(ctx, s.db(ctx), es)
}

// addPublishEvents inserts events on db (the pool or a transaction) in one statement, skipping
// any whose dedupe key is taken; an event without a time gets the statement's (as GORM gave
// every row of a batch one time). One array a column, past GORM: the statement is the same
// text whatever the batch (GORM's VALUES list was a statement to prepare and plan for every
// batch size, and its reflection most of the cost of an agent result's event).
func (s *Store) addPublishEvents(ctx context.Context, db *gorm.DB, es []models.PublishEvent) error {
	n := len(es)
	pubs, agents := make([]uuid.UUID, n), make([]*string, n)
	types, actors, messages, metadata := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	revisions, keys, times := make([]int32, n), make([]*string, n), make([]time.Time, n)
	now := db.NowFunc()
	for i := range es {
		e := &es[i]
		meta, err := objectJSON(e.Metadata)
		if err != nil {
			return err
		}
		if e.AgentID != nil {
			a := e.AgentID.String()
			agents[i] = &a
		}
		at := e.CreatedAt
		if at.IsZero() {
			at = now
		}
		pubs[i], types[i], actors[i], messages[i], metadata[i] = e.PublishID, e.Type, e.Actor, e.Message, string(meta)
		revisions[i], keys[i], times[i] = int32(e.Revision), e.DedupeKey, at
	}
	const q = `INSERT INTO publish_events (publish_id, type, revision, actor, agent_id, message, metadata, dedupe_key, created_at)
		SELECT v.publish_id, v.type, v.revision, v.actor, v.agent_id::uuid, v.message, v.metadata::jsonb, v.dedupe_key, v.created_at
		FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[])
			AS v(publish_id, type, revision, actor, agent_id, message, metadata, dedupe_key, created_at)
		ON CONFLICT (dedupe_key) DO NOTHING`
	s.observed(q)
	_, err := db.Statement.ConnPool.ExecContext(ctx, q, pubs, types, revisions, actors, agents, messages, metadata, keys, times)
	return err
}

func addPublishEvent(tx *gorm.DB, e *models.PublishEvent) error {
	if e.Metadata == nil {
		e.Metadata = models.JSONMap{}
	}
	return tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "dedupe_key"}}, DoNothing: true}).Create(e).Error
}

// ListPublishEvents lists a publish's timeline, oldest first.
func (s *Store) ListPublishEvents(ctx context.Context, publishID uuid.UUID) ([]models.PublishEvent, error) {
	var rows []models.PublishEvent
	err := s.db(ctx).Where("publish_id = ?", publishID).Order("created_at, id").Find(&rows).Error
	return rows, err
}

// ListRevisions lists a publish's revisions, newest first, without their snapshots.
func (s *Store) ListRevisions(ctx context.Context, publishID uuid.UUID) ([]models.PublishRevision, error) {
	var rows []models.PublishRevision
	err := s.db(ctx).Omit("snapshot").Where("publish_id = ?", publishID).Order("revision DESC").Find(&rows).Error
	return rows, err
}

// GetRevision returns one revision with its snapshot bytes.
func (s *Store) GetRevision(ctx context.Context, publishID uuid.UUID, revision int) (models.PublishRevision, error) {
	var r models.PublishRevision
	return r, notFound(s.db(ctx).Take(&r, "publish_id = ? AND revision = ?", publishID, revision).Error)
}

// ClusterRevision returns a frozen revision's snapshot and checksum when its publish is on
// cluster (what an agent of that cluster may fetch), in one statement; ErrNotFound otherwise.
func (s *Store) ClusterRevision(ctx context.Context, clusterID, publishID uuid.UUID, revision int) (snapshot []byte, checksum string, err error) {
	// Every agent of the cluster reads this for every publish: past GORM (readRows).
	err = s.readRow(ctx, `SELECT r.snapshot, r.checksum FROM publish_revisions r JOIN product_publishes p ON p.id = r.publish_id
		WHERE r.publish_id = $1 AND r.revision = $2 AND p.cluster_id = $3`, []any{publishID, revision, clusterID}, &snapshot, &checksum)
	if err != nil {
		return nil, "", err
	}
	return snapshot, checksum, nil
}

// PublishResult is one agent's result for a publish command.
type PublishResult struct {
	CommandID uuid.UUID      `json:"command_id"`
	AgentID   uuid.UUID      `json:"agent_id"`
	AgentName string         `json:"agent_name"`
	Action    string         `json:"action"`
	Revision  int            `json:"revision"`
	Delivery  string         `json:"delivery"`
	SentAt    *time.Time     `json:"sent_at"`
	AckedAt   *time.Time     `json:"acked_at"`
	Status    string         `json:"status"`
	Message   string         `json:"message"`
	Checksum  string         `json:"checksum"`
	Resources []any          `json:"applied_resources"`
	Result    models.JSONMap `json:"-"`
}

// PublishResults lists the per-agent delivery and result of every command of a publish.
func (s *Store) PublishResults(ctx context.Context, publishID uuid.UUID) ([]PublishResult, error) {
	var rows []PublishResult
	err := s.db(ctx).Raw(`SELECT d.command_id, d.agent_id, COALESCE(a.name, '') AS agent_name, c.payload->>'action' AS action,
			(c.payload->>'revision')::int AS revision, d.status AS delivery, d.sent_at, d.acked_at, d.result_status AS status, d.result
		FROM agent_commands c JOIN agent_command_deliveries d ON d.command_id = c.id LEFT JOIN agents a ON a.id = d.agent_id
		WHERE c.kind = 'deploy' AND c.payload->>'publish_id' = ?
		ORDER BY COALESCE(d.acked_at, d.sent_at), d.agent_id`, publishID.String()).Scan(&rows).Error
	for i := range rows {
		r := &rows[i]
		r.Message, _ = r.Result["message"].(string)
		r.Checksum, _ = r.Result["checksum"].(string)
		r.Resources, _ = r.Result["applied_resources"].([]any)
		if r.Resources == nil {
			r.Resources = []any{}
		}
	}
	return rows, err
}

// PublishUsage is the CatalogUsage of the publish module: a catalog row is in use while the
// current revision of a live publish (DEPLOYING, PUBLISHED, WITHDRAWING) uses it. A FAILED
// publish does not hold the catalog: fixing what made it fail is the usual next step.
type PublishUsage struct{ Store *Store }

// InUse implements CatalogUsage.
func (u PublishUsage) InUse(ctx context.Context, tenantID uuid.UUID, kind string, id uuid.UUID) (bool, error) {
	var n int64
	err := u.Store.db(ctx).Raw(`SELECT count(*) FROM publish_revision_uses r JOIN product_publishes p ON p.id = r.publish_id
		WHERE p.tenant_id = ? AND r.kind = ? AND r.ref_id = ? AND r.revision = p.current_revision
		  AND p.status IN ('DEPLOYING', 'PUBLISHED', 'WITHDRAWING')`, tenantID, kind, id).Scan(&n).Error
	return n > 0, err
}

// EgressViolations lists the backend endpoints of services that cluster cl's egress policy
// refuses (see egressViolations).
func (s *Store) EgressViolations(ctx context.Context, cl models.Cluster, tenantID uuid.UUID, services []uuid.UUID) ([]string, error) {
	return egressViolations(ctx, s.db(ctx), cl, tenantID, services)
}

// egressViolations lists the backend endpoints of services that cluster cl's egress policy
// refuses, as "backend <name>: <why>".
func egressViolations(ctx context.Context, tx *gorm.DB, cl models.Cluster, tenantID uuid.UUID, services []uuid.UUID) ([]string, error) {
	if len(services) == 0 {
		return nil, nil
	}
	pol, err := egress.Parse(cl.EgressAllow.V.CIDRs, cl.EgressAllow.V.NameSuffixes)
	if err != nil {
		return nil, fmt.Errorf("cluster %s egress policy: %w", cl.Name, err)
	}
	var backends []models.Backend
	if err := tx.WithContext(ctx).Where("tenant_id = ? AND api_service_id IN ?", tenantID, services).Order("name").Find(&backends).Error; err != nil {
		return nil, err
	}
	var out []string
	for _, b := range backends {
		for _, ep := range b.Endpoints.V {
			if err := pol.Check(ep.Host); err != nil {
				out = append(out, fmt.Sprintf("backend %s: %v", b.Name, err))
			}
		}
	}
	return out, nil
}
