package catalog

import (
	"context"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// APIServiceInput is the writable part of an API service: what a create sends, and the document
// a change merges into.
type APIServiceInput struct {
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	Description string            `json:"description"`
	Labels      map[string]string `json:"labels"`
	Status      string            `json:"status"`
}

// APIServiceInputOf returns the writable fields of a service.
func APIServiceInputOf(s models.APIService) APIServiceInput {
	return APIServiceInput{Name: s.Name, Version: s.Version, Description: s.Description, Labels: s.Labels, Status: s.Status}
}

// Validate checks a service.
func (in *APIServiceInput) Validate() error {
	var v validation
	v.Check(serviceNameRe.MatchString(in.Name), "name", "2 to 100 letters, digits and dashes")
	v.Check(len(in.Version) <= 50 && semverRe.MatchString(in.Version), "version", "a semantic version such as 1.2.0 (at most 50 characters)")
	v.text("description", in.Description, 0, 500)
	v.labels("labels", in.Labels)
	v.Check(isOneOf(in.Status, models.ServiceActive, models.ServiceInactive), "status", "must be active or inactive")
	return v.Err()
}

func (in APIServiceInput) applyTo(s *models.APIService) {
	s.Name, s.Version, s.Description, s.Labels, s.Status = in.Name, in.Version, in.Description, models.Labels(in.Labels), in.Status
	if s.Labels == nil {
		s.Labels = models.Labels{}
	}
}

// CreateAPIService creates a service (version 1.0.0 and inactive unless told otherwise); a
// taken name is name_taken.
func (c *Catalog) CreateAPIService(ctx context.Context, tenantID uuid.UUID, in APIServiceInput) (models.APIService, error) {
	if in.Version == "" {
		in.Version = "1.0.0"
	}
	if in.Status == "" {
		in.Status = models.ServiceInactive
	}
	if err := in.Validate(); err != nil {
		return models.APIService{}, err
	}
	s := models.APIService{TenantID: tenantID}
	in.applyTo(&s)
	return s, failure(c.store.CreateAPIService(ctx, &s), "API service")
}

// ListAPIServices lists a tenant's services, newest first.
func (c *Catalog) ListAPIServices(ctx context.Context, tenantID uuid.UUID, f store.APIServiceFilter, p store.Page) ([]models.APIService, string, error) {
	rows, next, err := c.store.ListAPIServices(ctx, tenantID, f, p)
	return rows, next, failure(err, "API service")
}

// apiServices: deleting a service cascades to its routes, backends and policies, and is refused
// while a product links it.
func apiServices(c *Catalog) Resource[models.APIService, APIServiceInput] {
	return Resource[models.APIService, APIServiceInput]{
		kind: store.KindAPIService, what: "API service", c: c,
		get: c.store.GetAPIService, update: c.store.UpdateAPIService, remove: c.store.DeleteAPIService,
		inputOf: APIServiceInputOf,
		apply: func(s *models.APIService, in APIServiceInput) error {
			if err := in.Validate(); err != nil {
				return err
			}
			in.applyTo(s)
			return nil
		},
	}
}
