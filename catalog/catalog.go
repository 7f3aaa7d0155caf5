// Package catalog owns the provider's logical layer: API services with their routes, backends
// and policies, gateway templates, products and plans. It holds every rule those rows obey (the
// Validate methods of the inputs) and the use cases that change them (create, change, delete,
// product status), each refusing to touch a row a published revision uses.
//
// Failures are fault errors (validation_failed with every failing field, not_found, name_taken,
// in_use, ...); a transport maps them to its statuses in one place.
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

// Catalog is the use cases of every tenant's catalog. The Resource fields are the reads,
// changes and deletes each kind shares; creates, lists and product status changes are methods.
type Catalog struct {
	store *store.Store
	usage store.CatalogUsage

	APIServices Resource[models.APIService, APIServiceInput]
	Routes      Resource[models.Route, RouteInput]
	Backends    Resource[models.Backend, BackendInput]
	Policies    Resource[models.Policy, PolicyInput]
	Gateways    Resource[models.Gateway, GatewayInput]
	Products    Resource[models.Product, ProductInput]
	Plans       Resource[models.Plan, PlanInput]
}

// New builds the catalog on s. usage says whether a published revision uses a row; nil means
// nothing is in use (a control plane without publishes).
func New(s *store.Store, usage store.CatalogUsage) *Catalog {
	if usage == nil {
		usage = store.NoCatalogUsage{}
	}
	c := &Catalog{store: s, usage: usage}
	c.APIServices = apiServices(c)
	c.Routes = routes(c)
	c.Backends = backends(c)
	c.Policies = policies(c)
	c.Gateways = gateways(c)
	c.Products = products(c)
	c.Plans = plans(c)
	return c
}

// guardUsage refuses to change or delete a row a published revision uses. The caller holds
// the row FOR UPDATE (see store.CatalogUsage), so a publish snapshotting it waits or is refused.
func (c *Catalog) guardUsage(ctx context.Context, tenantID uuid.UUID, kind string, id uuid.UUID) error {
	inUse, err := c.usage.InUse(ctx, tenantID, kind, id)
	if err != nil {
		return err
	}
	if inUse {
		return fault.Conflicting("in_use", "this "+strings.ReplaceAll(kind, "_", " ")+" is used by a published revision; withdraw it or publish a new revision without it first", "")
	}
	return nil
}

// failure turns the typed errors of the catalog store into faults, once; what names the row
// in the detail ("route"). Faults and errors it does not know pass through unchanged.
func failure(err error, what string) error {
	if err == nil {
		return nil
	}
	if _, ok := fault.As(err); ok {
		return err
	}
	var refs store.RefErrors
	var ref *store.ReferencedError
	var tr *store.TransitionError
	switch {
	case errors.As(err, &refs):
		fe := make([]fault.FieldError, len(refs))
		for i, r := range refs {
			fe[i] = fault.FieldError{Field: r.Field, Message: r.Message}
		}
		return fault.ValidationFailed(fe...)
	case errors.Is(err, store.ErrNotFound):
		return fault.Missing(what)
	case errors.Is(err, store.ErrConflict):
		return fault.Conflicting("name_taken", "a "+what+" with this name exists", "")
	case errors.Is(err, store.ErrInUse):
		return fault.Conflicting("in_use", "this "+what+" is used by a publish", "")
	case errors.Is(err, store.ErrArchived):
		return fault.Conflicting("product_archived", "the product is archived and read-only", models.ProductArchived)
	case errors.Is(err, store.ErrNoActiveService):
		return fault.ValidationFailed(fault.FieldError{Field: "api_services", Message: "an active product needs at least one linked API service with status active"})
	case errors.As(err, &ref):
		return fault.Conflicting("referenced", fmt.Sprintf("the %s is still referenced by %s %s", what, ref.By, strings.Join(ref.Names, ", ")), "")
	case errors.As(err, &tr):
		return fault.Conflicting("invalid_transition", fmt.Sprintf("a %s %s cannot become %s", tr.From, what, tr.To), tr.From)
	}
	return err
}

// createFailure is failure for the create of a row under a parent: a missing parent (the
// service of a route, the product of a plan) is named as the parent.
func createFailure(err error, parent, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fault.Missing(parent)
	}
	return failure(err, what)
}
