-- Agents and their gateway: registration tokens, agent credentials (a JWT generation and a
-- hashed refresh secret), the event log of every agent, and the durable command outbox with
-- per-agent delivery state that the agent gateway replicas deliver from.

-- +goose Up
ALTER TABLE agents
    ADD COLUMN token_generation    INT          NOT NULL DEFAULT 1,
    ADD COLUMN refresh_secret_hash CHAR(64),
    ADD COLUMN session_id          UUID,
    ADD COLUMN revoked_at          TIMESTAMPTZ,
    ADD COLUMN registered_with     UUID,
    ADD COLUMN applied             JSONB        NOT NULL DEFAULT '[]';
CREATE INDEX agents_created_idx ON agents (created_at DESC, id DESC);
CREATE INDEX clusters_created_idx ON clusters (created_at DESC, id DESC);

CREATE TABLE registration_tokens (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id  UUID         NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    token_hash  CHAR(64)     NOT NULL UNIQUE,
    prefix      VARCHAR(16)  NOT NULL,
    description VARCHAR(500) NOT NULL DEFAULT '',
    max_uses    INT          NOT NULL DEFAULT 1,
    uses        INT          NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ  NOT NULL,
    revoked_at  TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    created_by  VARCHAR(320) NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT registration_tokens_uses_check CHECK (max_uses >= 1 AND uses >= 0)
);
CREATE INDEX registration_tokens_cluster_idx ON registration_tokens (cluster_id, created_at DESC, id DESC);

CREATE TABLE agent_events (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id   UUID         NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    cluster_id UUID         NOT NULL,
    type       VARCHAR(30)  NOT NULL,
    message    VARCHAR(1000) NOT NULL DEFAULT '',
    metadata   JSONB        NOT NULL DEFAULT '{}',
    ip_address VARCHAR(45)  NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX agent_events_agent_idx ON agent_events (agent_id, created_at DESC, id DESC);

-- The outbox. A command addresses a cluster (every agent of it) or one agent. dedupe_key makes
-- enqueueing idempotent (activities retry); supersede_key lets a newer command of the same
-- subject (the next revision of a publish, the next version of a credential) retire older ones
-- that agents which have not seen them yet no longer need.
CREATE TABLE agent_commands (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id    UUID         NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    agent_id      UUID         REFERENCES agents(id) ON DELETE CASCADE,
    kind          VARCHAR(30)  NOT NULL,
    priority      SMALLINT     NOT NULL DEFAULT 5,
    dedupe_key    VARCHAR(200) NOT NULL UNIQUE,
    supersede_key VARCHAR(200) NOT NULL DEFAULT '',
    payload       JSONB        NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    superseded_at TIMESTAMPTZ,
    CONSTRAINT agent_commands_kind_check CHECK (kind IN ('deploy', 'credential_upsert', 'credential_revoke', 'replace_token', 'close'))
);
CREATE INDEX agent_commands_pending_idx ON agent_commands (cluster_id, priority, created_at, id) WHERE superseded_at IS NULL;
CREATE INDEX agent_commands_supersede_idx ON agent_commands (supersede_key) WHERE supersede_key <> '' AND superseded_at IS NULL;

CREATE TABLE agent_command_deliveries (
    command_id    UUID        NOT NULL REFERENCES agent_commands(id) ON DELETE CASCADE,
    agent_id      UUID        NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    status        VARCHAR(10) NOT NULL,
    sent_at       TIMESTAMPTZ,
    acked_at      TIMESTAMPTZ,
    result_status VARCHAR(20) NOT NULL DEFAULT '',
    result        JSONB       NOT NULL DEFAULT '{}',
    passed_on_at  TIMESTAMPTZ,
    PRIMARY KEY (command_id, agent_id),
    CONSTRAINT agent_command_deliveries_status_check CHECK (status IN ('sent', 'acked'))
);
CREATE INDEX agent_command_deliveries_agent_idx ON agent_command_deliveries (agent_id) WHERE status = 'acked';
CREATE INDEX agent_command_deliveries_unpassed_idx ON agent_command_deliveries (acked_at) WHERE status = 'acked' AND passed_on_at IS NULL;

-- +goose Down
DROP TABLE agent_command_deliveries;
DROP TABLE agent_commands;
DROP TABLE agent_events;
DROP TABLE registration_tokens;
DROP INDEX clusters_created_idx;
DROP INDEX agents_created_idx;
ALTER TABLE agents
    DROP COLUMN applied,
    DROP COLUMN registered_with,
    DROP COLUMN revoked_at,
    DROP COLUMN session_id,
    DROP COLUMN refresh_secret_hash,
    DROP COLUMN token_generation;
