package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/models"
)

// Progressive rollouts of a product (package rollout, RolloutWorkflow): the accepted request,
// its resolved clusters, and the states the workflow's activities write.

// CreateRollout inserts a rollout and its target clusters.
func (s *Store) CreateRollout(ctx context.Context, r *models.Rollout, clusters []models.RolloutCluster) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		if err := s.db(ctx).Create(r).Error; err != nil {
			return err
		}
		for i := range clusters {
			clusters[i].RolloutID = r.ID
		}
		if len(clusters) == 0 {
			return nil
		}
		return s.db(ctx).CreateInBatches(clusters, 200).Error
	})
}

// GetRollout returns a tenant's rollout.
func (s *Store) GetRollout(ctx context.Context, tenantID, id uuid.UUID) (models.Rollout, error) {
	var r models.Rollout
	return r, notFound(s.db(ctx).Take(&r, "tenant_id = ? AND id = ?", tenantID, id).Error)
}

// GetRolloutByID returns a rollout of any tenant (activities).
func (s *Store) GetRolloutByID(ctx context.Context, id uuid.UUID) (models.Rollout, error) {
	var r models.Rollout
	return r, notFound(s.db(ctx).Take(&r, "id = ?", id).Error)
}

// RolloutFilter filters rollout lists.
type RolloutFilter struct {
	ProductID *uuid.UUID
	Status    string
}

// ListRollouts lists a tenant's rollouts, newest first.
func (s *Store) ListRollouts(ctx context.Context, tenantID uuid.UUID, f RolloutFilter, p Page) ([]models.Rollout, string, error) {
	q := s.db(ctx).Table("rollouts").Where("tenant_id = ?", tenantID)
	if f.ProductID != nil {
		q = q.Where("product_id = ?", *f.ProductID)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	var rows []models.Rollout
	if err := Paginate(q, "rollouts", p).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// ListRolloutClusters lists a rollout's clusters in wave order.
func (s *Store) ListRolloutClusters(ctx context.Context, rolloutID uuid.UUID) ([]models.RolloutCluster, error) {
	var out []models.RolloutCluster
	err := s.db(ctx).Where("rollout_id = ?", rolloutID).Order("wave, position").Find(&out).Error
	return out, err
}

// ActiveRolloutsOf lists the rollouts of a product whose run is still in flight, except one.
func (s *Store) ActiveRolloutsOf(ctx context.Context, productID, except uuid.UUID) ([]models.Rollout, error) {
	var out []models.Rollout
	err := s.db(ctx).Where("product_id = ? AND id <> ? AND status IN ?", productID, except,
		[]string{models.RolloutProgressing, models.RolloutPaused, models.RolloutAborting}).Order("created_at").Find(&out).Error
	return out, err
}

// RolloutUpdate is what a rollout run writes: the rollout's status and what it waits for, the
// clusters whose state changed.
type RolloutUpdate struct {
	Status, PauseReason, Reason string
	Wave, Failures, BudgetLeft  int
	Waiting                     models.RolloutWaiting
	SupersededBy                *uuid.UUID
	Clusters                    []models.RolloutCluster
}

// SaveRolloutState writes a run's state in one transaction; extra runs in the same one (the
// audit row of a decision).
func (s *Store) SaveRolloutState(ctx context.Context, id uuid.UUID, u RolloutUpdate, extra func(ctx context.Context) error) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		now := time.Now().UTC()
		changes := map[string]any{"status": u.Status, "pause_reason": u.PauseReason, "status_reason": models.Cut(u.Reason, 2000),
			"current_wave": u.Wave, "failures": u.Failures, "budget_left": u.BudgetLeft, "waiting": models.JSON[models.RolloutWaiting]{V: u.Waiting}, "updated_at": now}
		if !models.RolloutActive(u.Status) {
			changes["finished_at"] = gorm.Expr("COALESCE(finished_at, ?)", now)
		}
		if u.SupersededBy != nil {
			changes["superseded_by"] = *u.SupersededBy
		}
		if err := s.db(ctx).Model(&models.Rollout{}).Where("id = ?", id).Updates(changes).Error; err != nil {
			return err
		}
		for _, c := range u.Clusters {
			if err := s.db(ctx).Model(&models.RolloutCluster{}).Where("rollout_id = ? AND cluster_id = ?", id, c.ClusterID).Updates(map[string]any{
				"state": c.State, "publish_id": c.PublishID, "revision": c.Revision, "previous_revision": c.PreviousRevision,
				"message": models.Cut(c.Message, 2000), "attempts": c.Attempts, "started_at": c.StartedAt, "deadline_at": c.DeadlineAt,
				"finished_at": c.FinishedAt, "updated_at": now}).Error; err != nil {
				return err
			}
		}
		if extra != nil {
			return extra(ctx)
		}
		return nil
	})
}

// SelectClusters lists the clusters in region (any when empty) whose labels hold every one of
// labels, oldest first. Labels are read from the cluster's metadata: metadata.labels when it
// has that object, else metadata itself.
func (s *Store) SelectClusters(ctx context.Context, region string, labels map[string]string) ([]models.Cluster, error) {
	q := s.db(ctx).Model(&models.Cluster{})
	if region != "" {
		q = q.Where("region = ?", region)
	}
	if len(labels) > 0 {
		b, _ := json.Marshal(labels)
		q = q.Where("(CASE WHEN jsonb_typeof(metadata->'labels') = 'object' THEN metadata->'labels' ELSE metadata END) @> ?::jsonb", string(b))
	}
	var out []models.Cluster
	err := q.Order("created_at, id").Find(&out).Error
	return out, err
}

// ClusterPublishOf finds a tenant's publish of a product on a cluster and hostname (the one a
// rollout gives a new revision), newest first.
func (s *Store) ClusterPublishOf(ctx context.Context, tenantID, productID, clusterID uuid.UUID, hostname string) (models.ProductPublish, error) {
	var p models.ProductPublish
	err := s.db(ctx).Where("tenant_id = ? AND product_id = ? AND cluster_id = ? AND hostname = ?", tenantID, productID, clusterID, hostname).
		Order("created_at DESC, id DESC").Take(&p).Error
	return p, notFound(err)
}
