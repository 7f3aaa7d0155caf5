-- Progressive rollouts of a product across many clusters (issue 16). A rollout row keeps the
-- request as it was accepted (publish fields, strategy, the clusters the selector resolved to at
-- start); its status and the per-cluster states are written only by RolloutWorkflow's activities.

-- +goose Up
CREATE TABLE rollouts (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    product_id     UUID NOT NULL,
    spec           JSONB NOT NULL DEFAULT '{}',
    strategy       JSONB NOT NULL DEFAULT '{}',
    selector       JSONB NOT NULL DEFAULT '{}',
    status         TEXT NOT NULL DEFAULT 'progressing'
                   CHECK (status IN ('progressing','paused','succeeded','aborting','aborted','superseded')),
    pause_reason   TEXT NOT NULL DEFAULT '' CHECK (pause_reason IN ('','gate','failure_budget','manual')),
    status_reason  TEXT NOT NULL DEFAULT '',
    current_wave   INT NOT NULL DEFAULT 0,
    max_failures   INT NOT NULL DEFAULT 0,
    failures       INT NOT NULL DEFAULT 0,
    budget_left    INT NOT NULL DEFAULT 0,
    waiting        JSONB NOT NULL DEFAULT '{}',
    workflow_id    TEXT NOT NULL,
    superseded_by  UUID,
    created_by     TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ
);
CREATE INDEX rollouts_tenant_created ON rollouts (tenant_id, created_at DESC, id DESC);
CREATE INDEX rollouts_product_active ON rollouts (product_id) WHERE status IN ('progressing','paused','aborting');

CREATE TABLE rollout_clusters (
    rollout_id        UUID NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    cluster_id        UUID NOT NULL,
    wave              INT NOT NULL,
    position          INT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending','deploying','soaking','succeeded','failed','timed_out','rolled_back')),
    publish_id        UUID,
    revision          INT NOT NULL DEFAULT 0,
    previous_revision INT NOT NULL DEFAULT 0,
    message           TEXT NOT NULL DEFAULT '',
    attempts          INT NOT NULL DEFAULT 0,
    started_at        TIMESTAMPTZ,
    deadline_at       TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (rollout_id, cluster_id)
);

-- +goose Down
DROP TABLE rollout_clusters;
DROP TABLE rollouts;
