-- When a publish was claimed for its workflow run, so a reconciler can tell a claim whose run
-- never started (or was terminated) from one whose run is just starting.

-- +goose Up
ALTER TABLE product_publishes ADD COLUMN claimed_at TIMESTAMPTZ;

-- +goose Down
ALTER TABLE product_publishes DROP COLUMN claimed_at;
