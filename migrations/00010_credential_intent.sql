-- Durable intent for credential rollouts: a credential change bumps `version` in its own
-- transaction; `runs_started_version` says up to which version the rollout (and expiry) runs
-- have been started. The worker's dispatcher starts whatever lags, so a change accepted while
-- Temporal is unreachable takes effect when it returns, with no client retry.

-- +goose Up
ALTER TABLE credentials ADD COLUMN runs_started_version BIGINT NOT NULL DEFAULT 0;
UPDATE credentials SET runs_started_version = version;
CREATE INDEX credentials_runs_pending_idx ON credentials (updated_at) WHERE runs_started_version < version;

-- +goose Down
DROP INDEX credentials_runs_pending_idx;
ALTER TABLE credentials DROP COLUMN runs_started_version;
