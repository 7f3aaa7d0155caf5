-- Liveness of idle agents is a lease per api replica (issue 15): each agent gateway replica
-- renews one row, "alive as of alive_at", every flush interval, and vouches with it for every
-- agent whose stream it holds (its watchdog ends the streams of agents that miss heartbeats).
-- An agent row names the replica holding its stream (replica_id, set at connect and cleared at
-- disconnect) and is written only when something about the agent changes, so the writes of an
-- idle fleet are one per replica per interval, not one per agent.

-- +goose Up
CREATE TABLE gateway_leases (
    replica_id UUID PRIMARY KEY,
    name       VARCHAR(255) NOT NULL DEFAULT '',
    started_at TIMESTAMPTZ  NOT NULL,
    alive_at   TIMESTAMPTZ  NOT NULL
);
ALTER TABLE agents ADD COLUMN replica_id UUID;
CREATE INDEX agents_replica_idx ON agents (replica_id) WHERE replica_id IS NOT NULL;

-- +goose Down
DROP INDEX agents_replica_idx;
ALTER TABLE agents DROP COLUMN replica_id;
DROP TABLE gateway_leases;
