package catalog

import (
	"context"
	"errors"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// ProductInput is the writable part of a product. Its status changes only through the
// activate, deactivate and archive use cases, which each state a rule.
type ProductInput struct {
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	Description string   `json:"description"`
	Categories  []string `json:"categories"`
	DocsURL     string   `json:"docs_url"`
	LogoURL     string   `json:"logo_url"`
	APIServices []string `json:"api_services"`
}

// ProductInputOf returns the writable fields of a product.
func ProductInputOf(p models.Product) ProductInput {
	ids := make([]string, len(p.APIServices))
	for i, id := range p.APIServices {
		ids[i] = id.String()
	}
	return ProductInput{Name: p.Name, Version: p.Version, Description: p.Description, Categories: p.Categories,
		DocsURL: p.DocsURL, LogoURL: p.LogoURL, APIServices: ids}
}

// Validate checks a product (its name trimmed) and returns it as a row (without ids or status).
func (in *ProductInput) Validate() (models.Product, error) {
	var v validation
	in.Name = strings.TrimSpace(in.Name)
	v.text("name", in.Name, 2, 100)
	v.Check(in.Version != "" && len(in.Version) <= 50 && !strings.ContainsAny(in.Version, " \t\r\n"), "version", "required: 1 to 50 characters without spaces")
	v.text("description", in.Description, 0, 2000)
	v.Check(len(in.Categories) <= 20, "categories", "at most 20")
	seen := map[string]bool{}
	for i, cat := range in.Categories {
		v.text(fieldAt("categories", i), cat, 1, 50)
		v.Check(!seen[strings.ToLower(cat)], fieldAt("categories", i), "duplicate")
		seen[strings.ToLower(cat)] = true
	}
	v.webURL("docs_url", in.DocsURL)
	v.webURL("logo_url", in.LogoURL)
	v.Check(len(in.APIServices) <= 100, "api_services", "at most 100")
	ids := v.ids("api_services", in.APIServices)
	if err := v.Err(); err != nil {
		return models.Product{}, err
	}
	return models.Product{Name: in.Name, Version: in.Version, Description: in.Description, Categories: orEmpty(in.Categories),
		DocsURL: in.DocsURL, LogoURL: in.LogoURL, APIServices: ids}, nil
}

// CreateProduct creates a draft product linking the tenant's services.
func (c *Catalog) CreateProduct(ctx context.Context, tenantID uuid.UUID, in ProductInput) (models.Product, error) {
	p, err := in.Validate()
	if err != nil {
		return models.Product{}, err
	}
	p.TenantID, p.Status = tenantID, models.ProductDraft
	return p, failure(c.store.CreateProduct(ctx, &p), "product")
}

// ListProducts lists a tenant's products, newest first.
func (c *Catalog) ListProducts(ctx context.Context, tenantID uuid.UUID, f store.ProductFilter, p store.Page) ([]models.Product, string, error) {
	rows, next, err := c.store.ListProducts(ctx, tenantID, f, p)
	return rows, next, failure(err, "product")
}

// ActivateProduct puts a draft product on sale; it needs an active linked service.
func (c *Catalog) ActivateProduct(ctx context.Context, tenantID, id uuid.UUID) (before, after models.Product, err error) {
	return c.setProductStatus(ctx, tenantID, id, models.ProductActive, false)
}

// DeactivateProduct takes a product off sale (back to draft), so a product a publish uses
// stays active.
func (c *Catalog) DeactivateProduct(ctx context.Context, tenantID, id uuid.UUID) (before, after models.Product, err error) {
	return c.setProductStatus(ctx, tenantID, id, models.ProductDraft, true)
}

// ArchiveProduct archives a product for good; a product a publish still uses is withdrawn first.
func (c *Catalog) ArchiveProduct(ctx context.Context, tenantID, id uuid.UUID) (before, after models.Product, err error) {
	return c.setProductStatus(ctx, tenantID, id, models.ProductArchived, true)
}

func (c *Catalog) setProductStatus(ctx context.Context, tenantID, id uuid.UUID, to string, guarded bool) (before, after models.Product, err error) {
	var guard func(models.Product) error
	if guarded {
		guard = func(models.Product) error { return c.guardUsage(ctx, tenantID, store.KindProduct, id) }
	}
	before, after, err = c.store.SetProductStatus(ctx, tenantID, id, to, guard)
	return before, after, failure(err, "product")
}

// products: a change never names the status (it has its own use cases); an active product is
// deactivated before it is deleted.
func products(c *Catalog) Resource[models.Product, ProductInput] {
	return Resource[models.Product, ProductInput]{
		kind: store.KindProduct, what: "product", c: c,
		get: c.store.GetProduct, update: c.store.UpdateProduct, remove: c.store.DeleteProduct,
		inputOf: ProductInputOf,
		apply: validInto[models.Product, ProductInput](func(p *models.Product, next models.Product) {
			p.Name, p.Version, p.Description, p.Categories = next.Name, next.Version, next.Description, next.Categories
			p.DocsURL, p.LogoURL, p.APIServices = next.DocsURL, next.LogoURL, next.APIServices
		}),
		fixed: map[string]string{"status": "changes with POST /v1/provider/products/{id}/activate, /deactivate or /archive"},
		removeFailure: func(err error) error {
			var tr *store.TransitionError
			if errors.As(err, &tr) {
				return fault.Conflicting("product_active", "an active product cannot be deleted; deactivate it first", tr.From)
			}
			return err
		},
	}
}
