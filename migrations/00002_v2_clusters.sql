-- v2: the physical layer (clusters, agents) appears and the logical layer lets go of it.
-- API services no longer belong to a gateway; a product publish names the cluster it runs on
-- and keeps gateway_id only as the template it exposes the product through.
--
-- Safe order: add cluster_id nullable, map legacy publishes to a `default` cluster, only then
-- SET NOT NULL. api_services.gateway_id is remembered in legacy_api_service_gateways before it
-- is dropped, so `down` restores v1 without losing a row and ops can still see the old link.

-- +goose Up
CREATE TABLE clusters (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name           VARCHAR(63)  NOT NULL UNIQUE,
    description    VARCHAR(500) NOT NULL DEFAULT '',
    region         VARCHAR(100) NOT NULL,
    cloud_provider VARCHAR(50)  NOT NULL DEFAULT '',
    capabilities   JSONB        NOT NULL DEFAULT '{}',
    metadata       JSONB        NOT NULL DEFAULT '{}',
    status         VARCHAR(20)  NOT NULL DEFAULT 'pending',
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT clusters_status_check CHECK (status IN ('pending', 'active', 'inactive', 'maintenance'))
);

CREATE TABLE agents (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id        UUID         NOT NULL REFERENCES clusters(id),
    name              VARCHAR(255) NOT NULL,
    status            VARCHAR(50)  NOT NULL DEFAULT 'pending',
    version           VARCHAR(50)  NOT NULL DEFAULT '',
    hostname          VARCHAR(255) NOT NULL DEFAULT '',
    ip_address        VARCHAR(45)  NOT NULL DEFAULT '',
    last_heartbeat_at TIMESTAMPTZ,
    last_connected_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (cluster_id, name),
    CONSTRAINT agents_status_check CHECK (status IN ('pending', 'connected', 'disconnected', 'revoked'))
);
CREATE INDEX agents_cluster_status_idx ON agents (cluster_id, status);

ALTER TABLE product_publishes ADD COLUMN cluster_id UUID REFERENCES clusters(id);

-- +goose StatementBegin
DO $$
DECLARE
    default_id UUID;
BEGIN
    IF EXISTS (SELECT 1 FROM product_publishes WHERE cluster_id IS NULL) THEN
        INSERT INTO clusters (name, description, region, status)
        VALUES ('default', 'Created by migration 00002 for publishes made before clusters existed; move them with `api migrate remap-legacy`.', 'legacy', 'active')
        ON CONFLICT (name) DO NOTHING;
        SELECT id INTO default_id FROM clusters WHERE name = 'default';
        UPDATE product_publishes SET cluster_id = default_id WHERE cluster_id IS NULL;
    END IF;
END
$$;
-- +goose StatementEnd

ALTER TABLE product_publishes ALTER COLUMN cluster_id SET NOT NULL;
CREATE INDEX product_publishes_cluster_env_status_idx ON product_publishes (cluster_id, environment, status);

CREATE TABLE legacy_api_service_gateways (
    api_service_id UUID PRIMARY KEY REFERENCES api_services(id) ON DELETE CASCADE,
    gateway_id     UUID NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO legacy_api_service_gateways (api_service_id, gateway_id)
SELECT id, gateway_id FROM api_services WHERE gateway_id IS NOT NULL;

ALTER TABLE api_services ALTER COLUMN gateway_id DROP NOT NULL;
UPDATE api_services SET gateway_id = NULL;
ALTER TABLE api_services DROP COLUMN gateway_id;

-- +goose Down
-- v1 requires every API service to have a gateway: services created under v2 have none, so they
-- get the gateway of their tenant's oldest template; a tenant without any gets a placeholder
-- gateway named `v2-unassigned` rather than losing the service.
ALTER TABLE api_services ADD COLUMN gateway_id UUID REFERENCES gateways(id);
UPDATE api_services s SET gateway_id = l.gateway_id
  FROM legacy_api_service_gateways l
 WHERE l.api_service_id = s.id AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = l.gateway_id);
INSERT INTO gateways (tenant_id, name)
SELECT DISTINCT s.tenant_id, 'v2-unassigned' FROM api_services s
 WHERE s.gateway_id IS NULL AND NOT EXISTS (SELECT 1 FROM gateways g WHERE g.tenant_id = s.tenant_id)
ON CONFLICT (tenant_id, name) DO NOTHING;
UPDATE api_services s SET gateway_id = (
    SELECT g.id FROM gateways g WHERE g.tenant_id = s.tenant_id ORDER BY g.created_at, g.id LIMIT 1)
 WHERE s.gateway_id IS NULL;
ALTER TABLE api_services ALTER COLUMN gateway_id SET NOT NULL;
DROP TABLE legacy_api_service_gateways;

DROP INDEX product_publishes_cluster_env_status_idx;
ALTER TABLE product_publishes DROP COLUMN cluster_id;
DROP TABLE agents;
DROP TABLE clusters;
