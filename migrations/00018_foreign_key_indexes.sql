-- Every foreign key gets an index led by its column, so deleting a referenced row finds its
-- referencing rows through it instead of reading the whole table. Before, deleting an agent read
-- all of agent_command_deliveries (its agent index held acked rows only, which the cascade's
-- lookup cannot use) and all of agent_commands, and withdrawing a publish or a plan read all of
-- subscriptions. The keys to tenants stay unindexed: the server never deletes a tenant.
-- The indexes are built inside the migration's transaction, which holds writes to these tables
-- for the build (seconds for millions of delivery rows).

-- +goose Up
DROP INDEX agent_command_deliveries_agent_idx;
CREATE INDEX agent_command_deliveries_agent_idx ON agent_command_deliveries (agent_id);
CREATE INDEX agent_commands_agent_idx ON agent_commands (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX agent_commands_cluster_idx ON agent_commands (cluster_id);
CREATE INDEX credential_rollouts_cluster_idx ON credential_rollouts (cluster_id);
CREATE INDEX credentials_rotated_from_idx ON credentials (rotated_from) WHERE rotated_from IS NOT NULL;
CREATE INDEX subscriptions_plan_idx ON subscriptions (plan_id);
CREATE INDEX subscriptions_publish_idx ON subscriptions (product_publish_id);

-- +goose Down
DROP INDEX subscriptions_publish_idx;
DROP INDEX subscriptions_plan_idx;
DROP INDEX credentials_rotated_from_idx;
DROP INDEX credential_rollouts_cluster_idx;
DROP INDEX agent_commands_cluster_idx;
DROP INDEX agent_commands_agent_idx;
DROP INDEX agent_command_deliveries_agent_idx;
CREATE INDEX agent_command_deliveries_agent_idx ON agent_command_deliveries (agent_id) WHERE status = 'acked';
