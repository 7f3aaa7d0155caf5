package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// CertificateInput is a certificate a tenant registers: a name (the secret, or the file in the
// agent's per-tenant certificate directory), an optional namespace and a description.
type CertificateInput struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	Description string `json:"description"`
}

// Validate checks a registration the way a gateway template's reference is checked, so every
// registered certificate can be named.
func (in CertificateInput) Validate() error {
	var v validation
	v.Check(in.Name != "" && len(in.Name) <= 253 && gwHostnameRe.MatchString(in.Name) && !strings.HasPrefix(in.Name, "*"), "name", "a Kubernetes secret name")
	v.Check(in.Namespace == "" || LabelNameRe.MatchString(in.Namespace), "namespace", "a Kubernetes namespace name")
	v.text("description", in.Description, 0, 500)
	return v.Err()
}

// CreateCertificate registers a certificate of the tenant.
func (c *Catalog) CreateCertificate(ctx context.Context, tenantID uuid.UUID, in CertificateInput) (models.Certificate, error) {
	if err := in.Validate(); err != nil {
		return models.Certificate{}, err
	}
	cert := models.Certificate{TenantID: tenantID, Name: in.Name, Namespace: in.Namespace, Description: in.Description}
	err := c.store.CreateCertificate(ctx, &cert)
	if errors.Is(err, store.ErrConflict) {
		return cert, fault.Conflicting("name_taken", "a certificate with this name and namespace is registered already", "")
	}
	return cert, err
}

// DeleteCertificate removes a certificate no gateway template of the tenant names.
func (c *Catalog) DeleteCertificate(ctx context.Context, tenantID, id uuid.UUID) (models.Certificate, error) {
	cert, err := c.store.DeleteCertificate(ctx, tenantID, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return cert, fault.Missing("certificate")
	case errors.Is(err, store.ErrConflict):
		return cert, fault.Conflicting("referenced", "a gateway template names this certificate", "")
	}
	return cert, err
}

// ownCertificates is the rule that a template names only certificates its tenant registered:
// any other reference is a 404 that says nothing of whether another tenant has one.
func (c *Catalog) ownCertificates(ctx context.Context, tenantID uuid.UUID, g models.Gateway) error {
	var refs []models.CertificateRef
	for _, l := range g.Listeners.V {
		if l.TLS != nil {
			refs = append(refs, l.TLS.CertificateRefs...)
		}
	}
	missing, err := c.store.UnregisteredCertificates(ctx, tenantID, refs)
	if err != nil || len(missing) == 0 {
		return err
	}
	name := missing[0].Name
	if missing[0].Namespace != "" {
		name = missing[0].Namespace + "/" + name
	}
	return fault.Missing(fmt.Sprintf("certificate %q", name))
}
