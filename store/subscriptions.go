package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// SubscriptionFilter filters subscription lists.
type SubscriptionFilter struct {
	Status      string
	PublishID   *uuid.UUID
	ClientAppID *uuid.UUID
}

// CreateSubscription inserts a pending subscription; a live one for the same app and publish
// is ErrConflict.
func (s *Store) CreateSubscription(ctx context.Context, sub *models.Subscription) error {
	sub.Status = models.SubscriptionPending
	err := s.db(ctx).Omit("decided_at", "started_at", "ended_at").Create(sub).Error
	if IsUniqueViolation(err, "") {
		return fmt.Errorf("the app already has a live subscription to this publish: %w", ErrConflict)
	}
	return err
}

// ListSubscriptions lists subscriptions of a customer (byCustomer) or provider tenant.
func (s *Store) ListSubscriptions(ctx context.Context, tenantID uuid.UUID, byCustomer bool, f SubscriptionFilter, p Page) ([]models.Subscription, string, error) {
	col := "provider_tenant_id"
	if byCustomer {
		col = "customer_tenant_id"
	}
	q := s.db(ctx).Table("subscriptions").Where(col+" = ?", tenantID)
	q = whereSet(q, "status", f.Status)
	q = wherePtr(q, "product_publish_id", f.PublishID)
	q = wherePtr(q, "client_app_id", f.ClientAppID)
	return page[models.Subscription](q, "subscriptions", p)
}

// GetSubscription returns a subscription seen from a customer (byCustomer) or provider tenant.
func (s *Store) GetSubscription(ctx context.Context, tenantID, id uuid.UUID, byCustomer bool) (models.Subscription, error) {
	col := "provider_tenant_id"
	if byCustomer {
		col = "customer_tenant_id"
	}
	var sub models.Subscription
	return sub, notFound(s.db(ctx).Take(&sub, "id = ? AND "+col+" = ?", id, tenantID).Error)
}

// GetSubscriptionByID returns a subscription of any tenant (activities).
func (s *Store) GetSubscriptionByID(ctx context.Context, id uuid.UUID) (models.Subscription, error) {
	var sub models.Subscription
	return sub, notFound(s.db(ctx).Take(&sub, "id = ?", id).Error)
}

// TransitionSubscription moves a subscription to `to` if its status is one of from, writing
// who decided and when; it returns whether it applied and the status after.
func (s *Store) TransitionSubscription(ctx context.Context, id uuid.UUID, from []string, to, actor, reason string) (models.Subscription, bool, error) {
	return s.TransitionSubscriptionWith(ctx, id, from, to, actor, reason, nil)
}

// TransitionSubscriptionWith is TransitionSubscription with what must happen with the
// transition, or not at all: also runs in its transaction when the transition applies (the
// audit row, the credential versions a rollout starts from), so a retry after a failure finds
// either everything or nothing done.
func (s *Store) TransitionSubscriptionWith(ctx context.Context, id uuid.UUID, from []string, to, actor, reason string,
	also func(tx *Store, before, after models.Subscription) error) (models.Subscription, bool, error) {
	var sub models.Subscription
	applied := false
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&sub, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		ok := false
		for _, f := range from {
			if sub.Status == f {
				ok = true
			}
		}
		if !ok {
			return nil
		}
		now := time.Now().UTC()
		changes := map[string]any{"status": to, "decided_by": actor, "decided_at": now, "reason": reason, "updated_at": now}
		switch to {
		case models.SubscriptionActive:
			if sub.StartedAt == nil {
				changes["started_at"] = now
			}
		case models.SubscriptionRejected, models.SubscriptionExpired, models.SubscriptionCancelled:
			changes["ended_at"] = now
		}
		before := sub
		if err := tx.Model(&sub).Updates(changes).Error; err != nil {
			return err
		}
		applied = true
		if err := tx.Take(&sub, "id = ?", id).Error; err != nil {
			return err
		}
		if also != nil {
			return also(New(tx), before, sub)
		}
		return nil
	})
	return sub, applied, err
}

// CreateCredential inserts a credential (hash only).
func (s *Store) CreateCredential(ctx context.Context, c *models.Credential) error {
	return s.db(ctx).Omit("revoked_at", "last_used_at").Create(c).Error
}

// ListCredentials lists an app's credentials, newest first.
func (s *Store) ListCredentials(ctx context.Context, tenantID, appID uuid.UUID, p Page) ([]models.Credential, string, error) {
	q := s.db(ctx).Table("credentials").Where("tenant_id = ? AND client_app_id = ?", tenantID, appID)
	return page[models.Credential](q, "credentials", p)
}

// GetCredential returns a credential of a tenant.
func (s *Store) GetCredential(ctx context.Context, tenantID, id uuid.UUID) (models.Credential, error) {
	var c models.Credential
	return c, notFound(s.db(ctx).Take(&c, "tenant_id = ? AND id = ?", tenantID, id).Error)
}

// GetCredentialByID returns a credential of any tenant (activities).
func (s *Store) GetCredentialByID(ctx context.Context, id uuid.UUID) (models.Credential, error) {
	var c models.Credential
	return c, notFound(s.db(ctx).Take(&c, "id = ?", id).Error)
}

// LockCredential returns a credential locked until the transaction of InTx ends: a rollout
// plans under it, so a newer version (whose bump waits for the lock) always sees the rollout
// rows of the older one.
func (s *Store) LockCredential(ctx context.Context, id uuid.UUID) (models.Credential, error) {
	var c models.Credential
	return c, notFound(s.db(ctx).Clauses(clause.Locking{Strength: "UPDATE"}).Take(&c, "id = ?", id).Error)
}

// EndCredential revokes (or expires) a credential and bumps its version; an already ended
// one is returned unchanged with changed=false.
func (s *Store) EndCredential(ctx context.Context, id uuid.UUID, status string) (models.Credential, bool, error) {
	var c models.Credential
	changed := false
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&c, "id = ?", id).Error; err != nil {
			return notFound(err)
		}
		if c.Status != models.CredentialActive {
			return nil
		}
		now := time.Now().UTC()
		if err := tx.Model(&c).Updates(map[string]any{"status": status, "revoked_at": now, "version": gorm.Expr("version + 1"), "updated_at": now}).Error; err != nil {
			return err
		}
		changed = true
		return tx.Take(&c, "id = ?", id).Error
	})
	return c, changed, err
}

// RotateCredential makes next (a new credential of the same app) and ends old now, or sets
// its revoke_at when a grace period is given.
func (s *Store) RotateCredential(ctx context.Context, old models.Credential, next *models.Credential, revokeAt *time.Time) (models.Credential, error) {
	var after models.Credential
	err := s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var cur models.Credential
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&cur, "id = ?", old.ID).Error; err != nil {
			return notFound(err)
		}
		if cur.Status != models.CredentialActive {
			return fmt.Errorf("credential is %s: %w", cur.Status, ErrConflict)
		}
		if err := tx.Omit("revoked_at", "last_used_at").Create(next).Error; err != nil {
			return err
		}
		now := time.Now().UTC()
		changes := map[string]any{"updated_at": now}
		if revokeAt == nil {
			changes["status"], changes["revoked_at"], changes["version"] = models.CredentialRevoked, now, gorm.Expr("version + 1")
		} else {
			changes["revoke_at"] = *revokeAt
		}
		if err := tx.Model(&cur).Updates(changes).Error; err != nil {
			return err
		}
		return tx.Take(&after, "id = ?", old.ID).Error
	})
	return after, err
}

// BumpAppCredentials gives every active credential of an app a new version, because what it
// grants changed (a subscription of the app started or ended); it returns them.
func (s *Store) BumpAppCredentials(ctx context.Context, appID uuid.UUID) ([]models.Credential, error) {
	var rows []models.Credential
	err := s.db(ctx).Raw(`UPDATE credentials SET version = version + 1, updated_at = now()
		WHERE client_app_id = ? AND status = 'active' RETURNING *`, appID).Scan(&rows).Error
	return rows, err
}

// RolloutView is a credential's state on one cluster, with its agents' presence.
type RolloutView struct {
	ClusterID       uuid.UUID  `json:"cluster_id"`
	ClusterName     string     `json:"cluster_name"`
	Version         int64      `json:"version"`
	Action          string     `json:"action"`
	Status          string     `json:"status"`
	QueuedAt        time.Time  `json:"queued_at"`
	PendingSince    *time.Time `json:"pending_since"`
	ConfirmedAt     *time.Time `json:"confirmed_at"`
	ConfirmedBy     *uuid.UUID `json:"confirmed_by"`
	ConnectedAgents int        `json:"connected_agents"`
	AgentsOffline   bool       `json:"agents_offline"`
}

// CredentialRollouts lists a credential's rollout per cluster.
func (s *Store) CredentialRollouts(ctx context.Context, credentialID uuid.UUID) ([]RolloutView, error) {
	var rows []RolloutView
	err := s.db(ctx).Raw(`SELECT r.cluster_id, c.name AS cluster_name, r.version, r.action, r.status, r.queued_at,
			CASE WHEN r.status = 'pending' THEN r.queued_at END AS pending_since, r.confirmed_at, r.confirmed_by,
			(SELECT count(*) FROM agents a WHERE a.cluster_id = r.cluster_id AND a.status = 'connected') AS connected_agents
		FROM credential_rollouts r JOIN clusters c ON c.id = r.cluster_id
		WHERE r.credential_id = ? ORDER BY c.name`, credentialID).Scan(&rows).Error
	for i := range rows {
		rows[i].AgentsOffline = rows[i].ConnectedAgents == 0
	}
	return rows, err
}

// MarkCredentialRunsStarted records that the rollout (and expiry) runs of a credential's
// version have been started.
func (s *Store) MarkCredentialRunsStarted(ctx context.Context, id uuid.UUID, version int64) error {
	return s.db(ctx).Exec(`UPDATE credentials SET runs_started_version = GREATEST(runs_started_version, ?) WHERE id = ?`, version, id).Error
}

// PendingCredentialRuns lists credentials whose current version's runs have not been started,
// changed at least olderThan ago (so the request that changed them had its chance), oldest first.
func (s *Store) PendingCredentialRuns(ctx context.Context, olderThan time.Duration, limit int) ([]models.Credential, error) {
	var out []models.Credential
	err := s.db(ctx).Where("runs_started_version < version AND updated_at < ?", time.Now().Add(-olderThan)).
		Order("updated_at").Limit(limit).Find(&out).Error
	return out, err
}
