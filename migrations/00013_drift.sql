-- Desired vs applied: a cluster says what the control plane does about an agent whose gateway
-- serves something else than it should (off: nothing; report: show it; repair: send the
-- desired state again), and an agent row holds the checksum of the credential set its last
-- heartbeat reported, beside the applied revisions it already holds.

-- +goose Up
ALTER TABLE clusters ADD COLUMN drift_policy VARCHAR(10) NOT NULL DEFAULT 'repair';
ALTER TABLE clusters ADD CONSTRAINT clusters_drift_policy_check CHECK (drift_policy IN ('off', 'report', 'repair'));
ALTER TABLE agents ADD COLUMN credential_checksum VARCHAR(64) NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE agents DROP COLUMN credential_checksum;
ALTER TABLE clusters DROP CONSTRAINT clusters_drift_policy_check;
ALTER TABLE clusters DROP COLUMN drift_policy;
