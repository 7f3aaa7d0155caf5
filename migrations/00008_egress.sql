-- Backend egress policy per cluster: address ranges and host names a cluster's operator allows
-- as backend endpoints beyond the default (which refuses loopback, link-local and metadata
-- addresses and the cluster's control services; see package egress).

-- +goose Up
ALTER TABLE clusters ADD COLUMN egress_allow JSONB NOT NULL DEFAULT '{"cidrs": [], "name_suffixes": []}';

-- +goose Down
ALTER TABLE clusters DROP COLUMN egress_allow;
