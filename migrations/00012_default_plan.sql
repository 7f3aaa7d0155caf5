-- A product may mark one plan as its default: a subscription that names no plan, to a product
-- with several, runs under it (with none marked, the plan is required).

-- +goose Up
ALTER TABLE plans ADD COLUMN is_default BOOLEAN NOT NULL DEFAULT false;
CREATE UNIQUE INDEX plans_one_default_idx ON plans (product_id) WHERE is_default;

-- +goose Down
DROP INDEX plans_one_default_idx;
ALTER TABLE plans DROP COLUMN is_default;
