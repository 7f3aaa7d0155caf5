package http

import (
	"context"
	"errors"
	nethttp "net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/catalog"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// Certificates: a provider registers the certificates its gateway templates may name (secret
// name and namespace, never key material); a template naming one that is not its tenant's is a
// 404, and the agent places each tenant's certificates apart.
func (a *API) registerCertificates(g *echo.Group) {
	g.GET("/certificates", listTop(func(echo.Context) (struct{}, error) { return struct{}{}, nil },
		func(ctx context.Context, tenantID uuid.UUID, _ struct{}, p store.Page) ([]models.Certificate, string, error) {
			return a.store.ListCertificates(ctx, tenantID, p)
		}), RequireRole(models.RoleViewer))
	g.GET("/certificates/:id", a.getCertificate, RequireRole(models.RoleViewer))
	g.POST("/certificates", a.createCertificate, RequireRole(models.RoleAdmin))
	g.DELETE("/certificates/:id", a.deleteCertificate, RequireRole(models.RoleAdmin))
}

func (a *API) createCertificate(c echo.Context) error {
	var in catalog.CertificateInput
	if err := bindBody(c, &in); err != nil {
		return err
	}
	cert, err := a.catalog.CreateCertificate(c.Request().Context(), Tenant(c).ID, in)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "certificate.create", ResourceType: "certificate", ResourceID: cert.ID.String(), ResourceName: cert.Name,
		Summary: map[string]any{"name": cert.Name, "namespace": cert.Namespace}})
	return c.JSON(nethttp.StatusCreated, cert)
}

func (a *API) getCertificate(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	cert, err := a.store.GetCertificate(c.Request().Context(), Tenant(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("certificate")
	}
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, cert)
}

func (a *API) deleteCertificate(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	cert, err := a.catalog.DeleteCertificate(c.Request().Context(), Tenant(c).ID, id)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "certificate.delete", ResourceType: "certificate", ResourceID: cert.ID.String(), ResourceName: cert.Name,
		Summary: map[string]any{"name": cert.Name, "namespace": cert.Namespace}})
	return c.NoContent(nethttp.StatusNoContent)
}
