-- Hostname ownership on shared clusters. Tenants own domains (granted by operators); a publish
-- serves only hostnames under its tenant's domains, and an exact hostname is served by at most
-- one publish per cluster and listener port: publish_host_claims' unique key, taken when a
-- revision is frozen, is what makes two claims of one name impossible, not a check that races.

-- +goose Up
CREATE TABLE tenant_domains (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  UUID         NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    domain     VARCHAR(253) NOT NULL UNIQUE,
    created_by VARCHAR(320) NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX tenant_domains_tenant_idx ON tenant_domains (tenant_id, domain);

CREATE TABLE publish_host_claims (
    publish_id UUID         NOT NULL REFERENCES product_publishes(id) ON DELETE CASCADE,
    cluster_id UUID         NOT NULL,
    port       INTEGER      NOT NULL,
    hostname   VARCHAR(253) NOT NULL,
    tenant_id  UUID         NOT NULL,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (publish_id, port, hostname),
    UNIQUE (cluster_id, port, hostname)
);

-- +goose Down
DROP TABLE publish_host_claims;
DROP TABLE tenant_domains;
