-- The v1 schema that v2 migrates from: gateways were deployment targets, API services belonged
-- to a gateway, and a product publish named a gateway but no cluster.

-- +goose Up
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE tenants (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        VARCHAR(63)  NOT NULL UNIQUE,
    name        VARCHAR(200) NOT NULL,
    type        VARCHAR(20)  NOT NULL DEFAULT 'customer',
    status      VARCHAR(20)  NOT NULL DEFAULT 'active',
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT tenants_type_check   CHECK (type IN ('provider', 'customer')),
    CONSTRAINT tenants_status_check CHECK (status IN ('active', 'suspended', 'deleted'))
);

CREATE TABLE gateways (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     UUID         NOT NULL REFERENCES tenants(id),
    name          VARCHAR(63)  NOT NULL,
    gateway_class VARCHAR(50)  NOT NULL DEFAULT 'envoy-gateway',
    listeners     JSONB        NOT NULL DEFAULT '[]',
    labels        JSONB        NOT NULL DEFAULT '{}',
    status        VARCHAR(20)  NOT NULL DEFAULT 'inactive',
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE api_services (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   UUID         NOT NULL REFERENCES tenants(id),
    gateway_id  UUID         NOT NULL REFERENCES gateways(id),
    name        VARCHAR(100) NOT NULL,
    version     VARCHAR(50)  NOT NULL DEFAULT '1.0.0',
    description VARCHAR(500) NOT NULL DEFAULT '',
    labels      JSONB        NOT NULL DEFAULT '{}',
    status      VARCHAR(20)  NOT NULL DEFAULT 'inactive',
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE products (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   UUID         NOT NULL REFERENCES tenants(id),
    name        VARCHAR(100) NOT NULL,
    version     VARCHAR(50)  NOT NULL,
    description TEXT         NOT NULL DEFAULT '',
    status      VARCHAR(20)  NOT NULL DEFAULT 'draft',
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE TABLE product_api_services (
    product_id     UUID NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    api_service_id UUID NOT NULL REFERENCES api_services(id),
    PRIMARY KEY (product_id, api_service_id)
);

CREATE TABLE product_publishes (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     UUID         NOT NULL REFERENCES tenants(id),
    product_id    UUID         NOT NULL REFERENCES products(id),
    gateway_id    UUID         NOT NULL REFERENCES gateways(id),
    environment   VARCHAR(10)  NOT NULL DEFAULT 'dev',
    status        VARCHAR(20)  NOT NULL DEFAULT 'DRAFT',
    published_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX product_publishes_gateway_idx ON product_publishes (gateway_id);

-- +goose Down
DROP TABLE product_publishes;
DROP TABLE product_api_services;
DROP TABLE products;
DROP TABLE api_services;
DROP TABLE gateways;
DROP TABLE tenants;
