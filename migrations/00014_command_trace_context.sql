-- The W3C trace context of the span that queued an agent command ({} when tracing is off), so
-- that the gateway's delivery and the agent's apply join the trace of the request behind it.

-- +goose Up
ALTER TABLE agent_commands ADD COLUMN trace_context JSONB NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE agent_commands DROP COLUMN trace_context;
