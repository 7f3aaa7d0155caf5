package store

import (
	"context"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
)

// CreateCertificate registers a tenant's certificate; a second one of the same name and
// namespace is ErrConflict.
func (s *Store) CreateCertificate(ctx context.Context, c *models.Certificate) error {
	return uniqueConflict(s.db(ctx).Create(c).Error)
}

// ListCertificates lists a tenant's certificates, newest first.
func (s *Store) ListCertificates(ctx context.Context, tenantID uuid.UUID, p Page) ([]models.Certificate, string, error) {
	return page[models.Certificate](s.db(ctx).Model(&models.Certificate{}).Where("tenant_id = ?", tenantID), "tenant_certificates", p)
}

// GetCertificate returns one certificate of a tenant.
func (s *Store) GetCertificate(ctx context.Context, tenantID, id uuid.UUID) (models.Certificate, error) {
	var c models.Certificate
	return c, notFound(s.db(ctx).Take(&c, "tenant_id = ? AND id = ?", tenantID, id).Error)
}

// DeleteCertificate removes a tenant's certificate unless one of its gateway templates names
// it (ErrConflict).
func (s *Store) DeleteCertificate(ctx context.Context, tenantID, id uuid.UUID) (models.Certificate, error) {
	var c models.Certificate
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := notFound(s.db(ctx).Take(&c, "tenant_id = ? AND id = ?", tenantID, id).Error); err != nil {
			return err
		}
		var used bool
		if err := s.db(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM gateways g, jsonb_array_elements(g.listeners) l,
				jsonb_array_elements(coalesce(l->'tls'->'certificate_refs', '[]')) r
			WHERE g.tenant_id = ? AND r->>'name' = ? AND coalesce(r->>'namespace', '') = ?)`, tenantID, c.Name, c.Namespace).
			Scan(&used).Error; err != nil {
			return err
		}
		if used {
			return ErrConflict
		}
		return s.db(ctx).Delete(&c).Error
	})
	return c, err
}

// UnregisteredCertificates returns the references of refs that name no certificate of the
// tenant.
func (s *Store) UnregisteredCertificates(ctx context.Context, tenantID uuid.UUID, refs []models.CertificateRef) ([]models.CertificateRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	var have []models.Certificate
	if err := s.db(ctx).Select("name, namespace").Where("tenant_id = ?", tenantID).Find(&have).Error; err != nil {
		return nil, err
	}
	known := map[models.CertificateRef]bool{}
	for _, c := range have {
		known[models.CertificateRef{Name: c.Name, Namespace: c.Namespace}] = true
	}
	var missing []models.CertificateRef
	for _, r := range refs {
		if !known[r] {
			missing = append(missing, r)
		}
	}
	return missing, nil
}
