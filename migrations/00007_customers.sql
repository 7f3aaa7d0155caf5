-- Customers: invitations to private publishes, client apps, subscriptions (driven by
-- SubscriptionWorkflow), credentials (API keys and OAuth clients: hashes only) and the per-
-- cluster rollout state of each credential version (driven by CredentialSyncWorkflow).

-- +goose Up
CREATE TABLE publish_invitations (
    publish_id         UUID         NOT NULL REFERENCES product_publishes(id) ON DELETE CASCADE,
    customer_tenant_id UUID         NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    invited_by         VARCHAR(320) NOT NULL DEFAULT '',
    created_at         TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (publish_id, customer_tenant_id)
);
CREATE INDEX publish_invitations_customer_idx ON publish_invitations (customer_tenant_id);
CREATE INDEX product_publishes_market_idx ON product_publishes (status, visibility, published_at DESC, id DESC);

CREATE TABLE client_apps (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       UUID         NOT NULL REFERENCES tenants(id),
    name            VARCHAR(100) NOT NULL,
    description     VARCHAR(500) NOT NULL DEFAULT '',
    callback_urls   TEXT[]       NOT NULL DEFAULT '{}',
    allowed_origins TEXT[]       NOT NULL DEFAULT '{}',
    status          VARCHAR(10)  NOT NULL DEFAULT 'active',
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    CONSTRAINT client_apps_status_check CHECK (status IN ('active', 'inactive'))
);
CREATE INDEX client_apps_tenant_idx ON client_apps (tenant_id, created_at DESC, id DESC);

CREATE TABLE subscriptions (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_tenant_id UUID          NOT NULL REFERENCES tenants(id),
    provider_tenant_id UUID          NOT NULL REFERENCES tenants(id),
    product_publish_id UUID          NOT NULL REFERENCES product_publishes(id),
    client_app_id      UUID          NOT NULL REFERENCES client_apps(id),
    plan_id            UUID          REFERENCES plans(id),
    status             VARCHAR(12)   NOT NULL DEFAULT 'pending',
    approval_required  BOOLEAN       NOT NULL DEFAULT false,
    approval_deadline  TIMESTAMPTZ,
    decided_by         VARCHAR(320)  NOT NULL DEFAULT '',
    decided_at         TIMESTAMPTZ,
    reason             VARCHAR(1000) NOT NULL DEFAULT '',
    started_at         TIMESTAMPTZ,
    ended_at           TIMESTAMPTZ,
    created_by         VARCHAR(320)  NOT NULL DEFAULT '',
    created_at         TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_status_check CHECK (status IN ('pending', 'active', 'rejected', 'expired', 'suspended', 'cancelled'))
);
-- One live subscription per app and publish.
CREATE UNIQUE INDEX subscriptions_live_key ON subscriptions (client_app_id, product_publish_id) WHERE status IN ('pending', 'active', 'suspended');
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_tenant_id, created_at DESC, id DESC);
CREATE INDEX subscriptions_provider_idx ON subscriptions (provider_tenant_id, created_at DESC, id DESC);
CREATE INDEX subscriptions_app_idx ON subscriptions (client_app_id, status);

CREATE TABLE credentials (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     UUID         NOT NULL REFERENCES tenants(id),
    client_app_id UUID         NOT NULL REFERENCES client_apps(id),
    type          VARCHAR(20)  NOT NULL,
    key_prefix    VARCHAR(100) NOT NULL UNIQUE,
    secret_hash   CHAR(64)     NOT NULL,
    label         VARCHAR(200) NOT NULL DEFAULT '',
    status        VARCHAR(10)  NOT NULL DEFAULT 'active',
    version       BIGINT       NOT NULL DEFAULT 1,
    expires_at    TIMESTAMPTZ,
    revoke_at     TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    rotated_from  UUID REFERENCES credentials(id),
    last_used_at  TIMESTAMPTZ,
    created_by    VARCHAR(320) NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT credentials_type_check CHECK (type IN ('api_key', 'oauth_client')),
    CONSTRAINT credentials_status_check CHECK (status IN ('active', 'revoked', 'expired'))
);
CREATE INDEX credentials_app_idx ON credentials (client_app_id, created_at DESC, id DESC);

CREATE TABLE credential_rollouts (
    credential_id   UUID        NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,
    cluster_id      UUID        NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    version         BIGINT      NOT NULL,
    action          VARCHAR(10) NOT NULL,
    command_id      UUID,
    status          VARCHAR(10) NOT NULL DEFAULT 'pending',
    queued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    confirmed_at    TIMESTAMPTZ,
    confirmed_by    UUID,
    PRIMARY KEY (credential_id, cluster_id),
    CONSTRAINT credential_rollouts_action_check CHECK (action IN ('upsert', 'revoke')),
    CONSTRAINT credential_rollouts_status_check CHECK (status IN ('pending', 'confirmed'))
);

-- +goose Down
DROP TABLE credential_rollouts;
DROP TABLE credentials;
DROP TABLE subscriptions;
DROP TABLE client_apps;
DROP INDEX product_publishes_market_idx;
DROP TABLE publish_invitations;
