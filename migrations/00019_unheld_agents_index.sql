-- The crash sweeper of every api replica looked, every heartbeat interval, at every connected
-- agent that some other replica holds (a join of the whole fleet with the leases), to find the
-- few whose replica stopped renewing its lease: with four replicas each idle agent was read four
-- times an interval. It now starts from the replicas (the distinct replica_id values of agents,
-- found through agents_replica_idx) and reads only the agents of a replica whose lease is stale
-- or gone, and those connected rows that name no replica at all (rows from before the leases),
-- which this index finds without reading the others.

-- +goose Up
CREATE INDEX agents_connected_unheld_idx ON agents (id) WHERE status = 'connected' AND replica_id IS NULL;

-- +goose Down
DROP INDEX agents_connected_unheld_idx;
