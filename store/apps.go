package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/models"
)

// Client apps of customer tenants.

// AppFilter filters client app lists.
type AppFilter struct{ Status string }

// ErrAppInUse refuses to delete an app that still has live subscriptions, active credentials
// or a credential whose rollout to the clusters is not finished.
var ErrAppInUse = errors.New("the app has live subscriptions or credentials")

// CreateClientApp inserts an app; a name the tenant already uses is ErrConflict.
func (s *Store) CreateClientApp(ctx context.Context, a *models.ClientApp) error {
	normalizeApp(a)
	return uniqueConflict(s.db(ctx).Create(a).Error)
}

func normalizeApp(a *models.ClientApp) {
	if a.CallbackURLs == nil {
		a.CallbackURLs = models.StringArray{}
	}
	if a.AllowedOrigins == nil {
		a.AllowedOrigins = models.StringArray{}
	}
}

// ListClientApps lists a tenant's apps, newest first.
func (s *Store) ListClientApps(ctx context.Context, tenantID uuid.UUID, f AppFilter, p Page) ([]models.ClientApp, string, error) {
	q := s.db(ctx).Model(&models.ClientApp{}).Where("tenant_id = ?", tenantID)
	q = whereSet(q, "status", f.Status)
	rows, next, err := page[models.ClientApp](q, "client_apps", p)
	for i := range rows {
		normalizeApp(&rows[i])
	}
	return rows, next, err
}

// GetClientApp returns an app of a tenant; another tenant's app is ErrNotFound.
func (s *Store) GetClientApp(ctx context.Context, tenantID, id uuid.UUID) (models.ClientApp, error) {
	a, err := getRow[models.ClientApp](s.db(ctx), tenantID, id)
	normalizeApp(&a)
	return a, err
}

// UpdateClientApp changes an app with apply (under the row lock); a taken name is ErrConflict.
func (s *Store) UpdateClientApp(ctx context.Context, tenantID, id uuid.UUID, apply func(*models.ClientApp) error) (before, after models.ClientApp, err error) {
	return updateRow(s, ctx, tenantID, id, func(cur *models.ClientApp) error {
		if err := apply(cur); err != nil {
			return err
		}
		normalizeApp(cur)
		return nil
	}, nil)
}

// DeleteClientApp deletes an app. It is ErrAppInUse while a subscription of the app is pending,
// active or suspended, a credential is active, or a credential's rollout is still pending (a
// revocation not yet confirmed by every cluster). The app's ended history (rejected, expired
// and cancelled subscriptions; revoked and expired credentials with their rollouts) goes with
// it: the audit log keeps the record.
func (s *Store) DeleteClientApp(ctx context.Context, tenantID, id uuid.UUID) (models.ClientApp, error) {
	return deleteRow(s, ctx, tenantID, id, nil, func(tx *gorm.DB, a models.ClientApp) error {
		var live int64
		err := tx.Raw(`SELECT
				(SELECT count(*) FROM subscriptions WHERE client_app_id = ? AND status IN ?)
			  + (SELECT count(*) FROM credentials WHERE client_app_id = ? AND status = ?)
			  + (SELECT count(*) FROM credential_rollouts r JOIN credentials c ON c.id = r.credential_id
				 WHERE c.client_app_id = ? AND r.status = ?)`,
			a.ID, []string{models.SubscriptionPending, models.SubscriptionActive, models.SubscriptionSuspended},
			a.ID, models.CredentialActive, a.ID, models.RolloutPending).Scan(&live).Error
		if err != nil {
			return err
		}
		if live > 0 {
			return ErrAppInUse
		}
		if err := tx.Exec(`DELETE FROM subscriptions WHERE client_app_id = ?`, a.ID).Error; err != nil {
			return fmt.Errorf("delete ended subscriptions: %w", err)
		}
		// Rotations point at their predecessor; clear the links inside the app first.
		if err := tx.Exec(`UPDATE credentials SET rotated_from = NULL WHERE client_app_id = ?`, a.ID).Error; err != nil {
			return err
		}
		if err := tx.Exec(`DELETE FROM credentials WHERE client_app_id = ?`, a.ID).Error; err != nil {
			return fmt.Errorf("delete ended credentials: %w", err)
		}
		return nil
	})
}
