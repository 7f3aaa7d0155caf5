-- The publish pipeline: a product publish names product, template, cluster, environment,
-- hostname, auth mode and visibility; every publish action freezes an immutable revision
-- snapshot (the exact bytes agents fetch, with their SHA-256); a timeline of events.
-- Status is written only by the workflows' activities; workflow_id marks a run in flight so
-- two racing requests can't start two runs.

-- +goose Up
ALTER TABLE product_publishes
    ADD COLUMN hostname          VARCHAR(253) NOT NULL DEFAULT '',
    ADD COLUMN auth_mode         VARCHAR(20)  NOT NULL DEFAULT 'none',
    ADD COLUMN auth_config       JSONB        NOT NULL DEFAULT '{}',
    ADD COLUMN visibility        VARCHAR(10)  NOT NULL DEFAULT 'public',
    ADD COLUMN approval_required BOOLEAN      NOT NULL DEFAULT false,
    ADD COLUMN deadline_seconds  INT,
    ADD COLUMN api_service_ids   UUID[]       NOT NULL DEFAULT '{}',
    ADD COLUMN current_revision  INT          NOT NULL DEFAULT 0,
    ADD COLUMN status_reason     VARCHAR(2000) NOT NULL DEFAULT '',
    ADD COLUMN workflow_id       VARCHAR(200),
    ADD COLUMN published_by      VARCHAR(320) NOT NULL DEFAULT '',
    ADD COLUMN withdrawn_at      TIMESTAMPTZ,
    ADD COLUMN withdrawn_by      VARCHAR(320) NOT NULL DEFAULT '',
    ADD COLUMN withdraw_reason   VARCHAR(1000) NOT NULL DEFAULT '',
    ADD COLUMN created_by        VARCHAR(320) NOT NULL DEFAULT '';
ALTER TABLE product_publishes
    ADD CONSTRAINT product_publishes_status_check CHECK (status IN ('DRAFT', 'DEPLOYING', 'PUBLISHED', 'FAILED', 'WITHDRAWING', 'WITHDRAWN')),
    ADD CONSTRAINT product_publishes_environment_check CHECK (environment IN ('dev', 'stage', 'prod')),
    ADD CONSTRAINT product_publishes_auth_mode_check CHECK (auth_mode IN ('none', 'api-key', 'oauth2')),
    ADD CONSTRAINT product_publishes_visibility_check CHECK (visibility IN ('public', 'private'));
CREATE INDEX product_publishes_tenant_idx ON product_publishes (tenant_id, created_at DESC, id DESC);
CREATE INDEX product_publishes_product_idx ON product_publishes (product_id);

CREATE TABLE publish_revisions (
    publish_id  UUID        NOT NULL REFERENCES product_publishes(id) ON DELETE CASCADE,
    revision    INT         NOT NULL,
    snapshot    BYTEA       NOT NULL,
    checksum    CHAR(64)    NOT NULL,
    rollback_of INT,
    created_by  VARCHAR(320) NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (publish_id, revision)
);

-- What a revision uses, so edits and deletes of catalog rows a publish depends on are refused.
CREATE TABLE publish_revision_uses (
    publish_id UUID        NOT NULL REFERENCES product_publishes(id) ON DELETE CASCADE,
    revision   INT         NOT NULL,
    kind       VARCHAR(20) NOT NULL,
    ref_id     UUID        NOT NULL,
    PRIMARY KEY (publish_id, revision, kind, ref_id)
);
CREATE INDEX publish_revision_uses_ref_idx ON publish_revision_uses (kind, ref_id);

CREATE TABLE publish_events (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    publish_id UUID         NOT NULL REFERENCES product_publishes(id) ON DELETE CASCADE,
    type       VARCHAR(40)  NOT NULL,
    revision   INT          NOT NULL DEFAULT 0,
    actor      VARCHAR(320) NOT NULL DEFAULT '',
    agent_id   UUID,
    message    VARCHAR(2000) NOT NULL DEFAULT '',
    metadata   JSONB        NOT NULL DEFAULT '{}',
    dedupe_key VARCHAR(200) UNIQUE,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX publish_events_publish_idx ON publish_events (publish_id, created_at, id);

-- +goose Down
DROP TABLE publish_events;
DROP TABLE publish_revision_uses;
DROP TABLE publish_revisions;
DROP INDEX product_publishes_product_idx;
DROP INDEX product_publishes_tenant_idx;
ALTER TABLE product_publishes
    DROP CONSTRAINT product_publishes_visibility_check,
    DROP CONSTRAINT product_publishes_auth_mode_check,
    DROP CONSTRAINT product_publishes_environment_check,
    DROP CONSTRAINT product_publishes_status_check,
    DROP COLUMN created_by, DROP COLUMN withdraw_reason, DROP COLUMN withdrawn_by, DROP COLUMN withdrawn_at,
    DROP COLUMN published_by, DROP COLUMN workflow_id, DROP COLUMN status_reason, DROP COLUMN current_revision,
    DROP COLUMN api_service_ids, DROP COLUMN deadline_seconds, DROP COLUMN approval_required, DROP COLUMN visibility,
    DROP COLUMN auth_config, DROP COLUMN auth_mode, DROP COLUMN hostname;
