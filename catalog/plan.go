package catalog

import (
	"context"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// PlanInput is the writable part of a plan.
type PlanInput struct {
	Name        string                `json:"name"`
	Description string                `json:"description"`
	RateLimit   *models.PlanRateLimit `json:"rate_limit"`
	Quota       *models.PlanQuota     `json:"quota"`
	IsDefault   bool                  `json:"is_default"`
}

// PlanInputOf returns the writable fields of a plan.
func PlanInputOf(p models.Plan) PlanInput {
	rl := p.RateLimit.V
	return PlanInput{Name: p.Name, Description: p.Description, RateLimit: &rl, Quota: p.Quota.V, IsDefault: p.IsDefault}
}

// Validate checks a plan (its name trimmed) and returns it as a row (without ids).
func (in *PlanInput) Validate() (models.Plan, error) {
	var v validation
	in.Name = strings.TrimSpace(in.Name)
	v.text("name", in.Name, 1, 100)
	v.text("description", in.Description, 0, 1000)
	if in.RateLimit == nil {
		v.Add("rate_limit", "required: {requests, period}")
	} else {
		v.Check(in.RateLimit.Requests >= 1 && in.RateLimit.Requests <= 1_000_000_000, "rate_limit.requests", "must be from 1 to 1000000000")
		v.Check(isOneOf(in.RateLimit.Period, models.PeriodSecond, models.PeriodMinute, models.PeriodHour, models.PeriodDay), "rate_limit.period", "must be second, minute, hour or day")
	}
	if q := in.Quota; q != nil {
		v.Check(q.Requests >= 1, "quota.requests", "must be at least 1")
		v.Check(isOneOf(q.Period, models.PeriodDay, models.PeriodMonth), "quota.period", "must be day or month")
	}
	if err := v.Err(); err != nil {
		return models.Plan{}, err
	}
	return models.Plan{Name: in.Name, Description: in.Description, RateLimit: models.JSON[models.PlanRateLimit]{V: *in.RateLimit},
		Quota: models.JSON[*models.PlanQuota]{V: in.Quota}, IsDefault: in.IsDefault}, nil
}

// CreatePlan creates a plan of a product; a product the tenant does not have is not found, an
// archived one refuses (product_archived).
func (c *Catalog) CreatePlan(ctx context.Context, tenantID, productID uuid.UUID, in PlanInput) (models.Plan, error) {
	pl, err := in.Validate()
	if err != nil {
		return models.Plan{}, err
	}
	pl.TenantID, pl.ProductID = tenantID, productID
	return pl, createFailure(c.store.CreatePlan(ctx, &pl), "product", "plan")
}

// ListPlans lists the plans of a product.
func (c *Catalog) ListPlans(ctx context.Context, tenantID, productID uuid.UUID, p store.Page) ([]models.Plan, string, error) {
	rows, next, err := c.store.ListPlans(ctx, tenantID, productID, p)
	return rows, next, failure(err, "product")
}

func plans(c *Catalog) Resource[models.Plan, PlanInput] {
	return Resource[models.Plan, PlanInput]{
		kind: store.KindPlan, what: "plan", c: c,
		get: c.store.GetPlan, update: c.store.UpdatePlan, remove: c.store.DeletePlan,
		inputOf: PlanInputOf,
		apply: validInto[models.Plan, PlanInput](func(pl *models.Plan, next models.Plan) {
			pl.Name, pl.Description, pl.RateLimit, pl.Quota, pl.IsDefault = next.Name, next.Description, next.RateLimit, next.Quota, next.IsDefault
		}),
	}
}
