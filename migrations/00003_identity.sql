-- Identity and the API contract: users (created on first request from the OIDC subject, or
-- earlier by e-mail when an operator or owner adds them), memberships, the immutable audit log,
-- and stored responses of Idempotency-Key requests.

-- +goose Up
CREATE TABLE users (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    issuer        VARCHAR(500),
    subject       VARCHAR(255),
    email         VARCHAR(320) NOT NULL,
    display_name  VARCHAR(200) NOT NULL DEFAULT '',
    last_login_at TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (issuer, subject)
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role       VARCHAR(20) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, user_id),
    CONSTRAINT memberships_role_check CHECK (role IN ('owner', 'admin', 'developer', 'viewer'))
);
CREATE INDEX memberships_user_idx ON memberships (user_id);
CREATE INDEX tenants_created_idx ON tenants (created_at DESC, id DESC);

CREATE TABLE audit_logs (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_type     VARCHAR(20)  NOT NULL DEFAULT 'user', -- user, agent, workflow, system
    actor_id       VARCHAR(100) NOT NULL DEFAULT '',
    actor_email    VARCHAR(320) NOT NULL DEFAULT '',
    actor_roles    TEXT[]       NOT NULL DEFAULT '{}',
    tenant_id      UUID,
    tenant_slug    VARCHAR(63)  NOT NULL DEFAULT '',
    action         VARCHAR(50)  NOT NULL,
    resource_type  VARCHAR(50)  NOT NULL,
    resource_id    VARCHAR(100) NOT NULL DEFAULT '',
    resource_name  VARCHAR(255) NOT NULL DEFAULT '',
    request_id     VARCHAR(64)  NOT NULL DEFAULT '',
    method         VARCHAR(10)  NOT NULL DEFAULT '',
    path           VARCHAR(500) NOT NULL DEFAULT '',
    status_code    INT          NOT NULL DEFAULT 0,
    ip_address     VARCHAR(45)  NOT NULL DEFAULT '',
    user_agent     VARCHAR(500) NOT NULL DEFAULT '',
    summary        JSONB        NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_created_idx  ON audit_logs (created_at DESC, id DESC);
CREATE INDEX audit_logs_tenant_idx   ON audit_logs (tenant_id, created_at DESC);
CREATE INDEX audit_logs_actor_idx    ON audit_logs (actor_id, created_at DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (resource_type, resource_id);
CREATE INDEX audit_logs_action_idx   ON audit_logs (action, created_at DESC);

-- +goose StatementBegin
CREATE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();

CREATE TABLE idempotency_keys (
    actor_id      VARCHAR(100) NOT NULL,
    key           VARCHAR(200) NOT NULL,
    method        VARCHAR(10)  NOT NULL,
    path          VARCHAR(500) NOT NULL,
    request_hash  CHAR(64)     NOT NULL,
    status_code   INT          NOT NULL DEFAULT 0, -- 0 while the first request is in flight
    content_type  VARCHAR(100) NOT NULL DEFAULT '',
    response_body BYTEA,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (actor_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TRIGGER audit_log_no_truncate ON audit_logs;
DROP TRIGGER audit_log_immutable ON audit_logs;
DROP TABLE audit_logs;
DROP FUNCTION audit_log_immutable();
DROP INDEX tenants_created_idx;
DROP TABLE memberships;
DROP TABLE users;
