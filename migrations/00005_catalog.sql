-- The provider's logical layer: API services own routes, backends and policies; gateway
-- templates; products link services and sell them through plans.
--
-- Every row carries tenant_id, and every link between rows is a composite foreign key on
-- (id, tenant_id), so the database itself refuses a route, backend, policy, plan or product link
-- that crosses tenants even if a query forgot its tenant filter. Lists are keyset pages on
-- (created_at DESC, id DESC) under the owning tenant or service, so a page costs the same with
-- ten rows or ten thousand.
--
-- The v1 tables (gateways, api_services, products, product_api_services) may hold rows written
-- by v1: constraints added to them are NOT VALID, which enforces them on every new or changed
-- row without failing the upgrade on legacy values.

-- +goose Up
ALTER TABLE api_services ADD CONSTRAINT api_services_id_tenant_key UNIQUE (id, tenant_id);
ALTER TABLE api_services ADD CONSTRAINT api_services_status_check
    CHECK (status IN ('active', 'inactive')) NOT VALID;
CREATE INDEX api_services_tenant_page_idx ON api_services (tenant_id, created_at DESC, id DESC);

ALTER TABLE gateways ADD COLUMN description VARCHAR(500) NOT NULL DEFAULT '';
ALTER TABLE gateways ADD CONSTRAINT gateways_status_check
    CHECK (status IN ('active', 'inactive')) NOT VALID;
ALTER TABLE gateways ADD CONSTRAINT gateways_class_check
    CHECK (gateway_class IN ('envoy-gateway', 'nginx')) NOT VALID;
CREATE INDEX gateways_tenant_page_idx ON gateways (tenant_id, created_at DESC, id DESC);

ALTER TABLE products ADD COLUMN categories TEXT[]        NOT NULL DEFAULT '{}';
ALTER TABLE products ADD COLUMN docs_url   VARCHAR(2048) NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN logo_url   VARCHAR(2048) NOT NULL DEFAULT '';
ALTER TABLE products ADD CONSTRAINT products_id_tenant_key UNIQUE (id, tenant_id);
ALTER TABLE products ADD CONSTRAINT products_status_check
    CHECK (status IN ('draft', 'active', 'archived')) NOT VALID;
CREATE INDEX products_tenant_page_idx ON products (tenant_id, created_at DESC, id DESC);

-- Links keep the order the provider gave and the tenant of both ends.
ALTER TABLE product_api_services ADD COLUMN tenant_id UUID;
ALTER TABLE product_api_services ADD COLUMN position  INT NOT NULL DEFAULT 0;
UPDATE product_api_services l SET tenant_id = p.tenant_id FROM products p WHERE p.id = l.product_id;
ALTER TABLE product_api_services ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE product_api_services ADD CONSTRAINT product_api_services_service_tenant_fkey
    FOREIGN KEY (api_service_id, tenant_id) REFERENCES api_services (id, tenant_id) NOT VALID;
ALTER TABLE product_api_services ADD CONSTRAINT product_api_services_product_tenant_fkey
    FOREIGN KEY (product_id, tenant_id) REFERENCES products (id, tenant_id) ON DELETE CASCADE NOT VALID;
-- "Which products link this service" is asked before a service is deleted.
CREATE INDEX product_api_services_service_idx ON product_api_services (api_service_id);

CREATE TABLE routes (
    id                         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                  UUID         NOT NULL REFERENCES tenants (id),
    api_service_id             UUID         NOT NULL,
    name                       VARCHAR(63)  NOT NULL,
    description                VARCHAR(500) NOT NULL DEFAULT '',
    hostnames                  TEXT[]       NOT NULL DEFAULT '{}',
    paths                      JSONB        NOT NULL DEFAULT '[]',
    methods                    TEXT[]       NOT NULL DEFAULT '{}',
    headers                    JSONB        NOT NULL DEFAULT '[]',
    query_params               JSONB        NOT NULL DEFAULT '[]',
    backend_refs               JSONB        NOT NULL DEFAULT '[]',
    priority                   INT          NOT NULL DEFAULT 100,
    tags                       TEXT[]       NOT NULL DEFAULT '{}',
    timeout_request_ms         INT,
    timeout_backend_request_ms INT,
    status                     VARCHAR(20)  NOT NULL DEFAULT 'active',
    created_at                 TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at                 TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT routes_service_fkey FOREIGN KEY (api_service_id, tenant_id)
        REFERENCES api_services (id, tenant_id) ON DELETE CASCADE,
    CONSTRAINT routes_service_name_key UNIQUE (api_service_id, name),
    CONSTRAINT routes_id_service_key UNIQUE (id, api_service_id),
    CONSTRAINT routes_status_check CHECK (status IN ('active', 'inactive', 'draft')),
    CONSTRAINT routes_timeouts_check CHECK (timeout_backend_request_ms IS NULL OR timeout_request_ms IS NULL
                                            OR timeout_backend_request_ms <= timeout_request_ms)
);
CREATE INDEX routes_service_page_idx ON routes (api_service_id, created_at DESC, id DESC);
-- Finding the routes that send traffic to a backend (before the backend is deleted).
CREATE INDEX routes_backend_refs_idx ON routes USING gin (backend_refs jsonb_path_ops);

CREATE TABLE backends (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          UUID         NOT NULL REFERENCES tenants (id),
    api_service_id     UUID         NOT NULL,
    name               VARCHAR(63)  NOT NULL,
    description        VARCHAR(500) NOT NULL DEFAULT '',
    scheme             VARCHAR(10)  NOT NULL DEFAULT 'http',
    endpoints          JSONB        NOT NULL DEFAULT '[]',
    lb_policy          VARCHAR(20)  NOT NULL DEFAULT 'RoundRobin',
    consistent_hash    JSONB,
    connect_timeout_ms INT,
    timeout_ms         INT,
    idle_timeout_ms    INT,
    health_check       JSONB,
    circuit_breaker    JSONB,
    retry              JSONB,
    tls                JSONB,
    status             VARCHAR(20)  NOT NULL DEFAULT 'active',
    created_at         TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT backends_service_fkey FOREIGN KEY (api_service_id, tenant_id)
        REFERENCES api_services (id, tenant_id) ON DELETE CASCADE,
    CONSTRAINT backends_service_name_key UNIQUE (api_service_id, name),
    CONSTRAINT backends_scheme_check CHECK (scheme IN ('http', 'https', 'grpc', 'grpcs')),
    CONSTRAINT backends_lb_policy_check CHECK (lb_policy IN ('RoundRobin', 'LeastRequest', 'Random', 'ConsistentHash')),
    CONSTRAINT backends_status_check CHECK (status IN ('active', 'inactive'))
);
CREATE INDEX backends_service_page_idx ON backends (api_service_id, created_at DESC, id DESC);

CREATE TABLE policies (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      UUID         NOT NULL REFERENCES tenants (id),
    scope          VARCHAR(10)  NOT NULL,
    api_service_id UUID,
    route_id       UUID,
    name           VARCHAR(63)  NOT NULL,
    description    VARCHAR(500) NOT NULL DEFAULT '',
    type           VARCHAR(50)  NOT NULL,
    category       VARCHAR(20)  NOT NULL,
    spec           JSONB        NOT NULL DEFAULT '{}',
    priority       INT          NOT NULL DEFAULT 100,
    enabled        BOOLEAN      NOT NULL DEFAULT true,
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT policies_service_fkey FOREIGN KEY (api_service_id, tenant_id)
        REFERENCES api_services (id, tenant_id) ON DELETE CASCADE,
    -- A route policy names the route's own service, so listing a service's policies finds it.
    CONSTRAINT policies_route_fkey FOREIGN KEY (route_id, api_service_id)
        REFERENCES routes (id, api_service_id) ON DELETE CASCADE,
    CONSTRAINT policies_scope_check CHECK (
        (scope = 'global'  AND api_service_id IS NULL     AND route_id IS NULL) OR
        (scope = 'service' AND api_service_id IS NOT NULL AND route_id IS NULL) OR
        (scope = 'route'   AND api_service_id IS NOT NULL AND route_id IS NOT NULL))
);
CREATE INDEX policies_global_page_idx ON policies (tenant_id, created_at DESC, id DESC) WHERE scope = 'global';
CREATE INDEX policies_service_page_idx ON policies (api_service_id, created_at DESC, id DESC);
CREATE INDEX policies_route_idx ON policies (route_id);

CREATE TABLE plans (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   UUID          NOT NULL REFERENCES tenants (id),
    product_id  UUID          NOT NULL,
    name        VARCHAR(100)  NOT NULL,
    description VARCHAR(1000) NOT NULL DEFAULT '',
    rate_limit  JSONB         NOT NULL,
    quota       JSONB,
    created_at  TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CONSTRAINT plans_product_fkey FOREIGN KEY (product_id, tenant_id)
        REFERENCES products (id, tenant_id) ON DELETE CASCADE,
    CONSTRAINT plans_product_name_key UNIQUE (product_id, name)
);
CREATE INDEX plans_product_page_idx ON plans (product_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE plans;
DROP TABLE policies;
DROP TABLE backends;
DROP TABLE routes;

DROP INDEX product_api_services_service_idx;
ALTER TABLE product_api_services DROP CONSTRAINT product_api_services_product_tenant_fkey;
ALTER TABLE product_api_services DROP CONSTRAINT product_api_services_service_tenant_fkey;
ALTER TABLE product_api_services DROP COLUMN position;
ALTER TABLE product_api_services DROP COLUMN tenant_id;

DROP INDEX products_tenant_page_idx;
ALTER TABLE products DROP CONSTRAINT products_status_check;
ALTER TABLE products DROP CONSTRAINT products_id_tenant_key;
ALTER TABLE products DROP COLUMN logo_url;
ALTER TABLE products DROP COLUMN docs_url;
ALTER TABLE products DROP COLUMN categories;

DROP INDEX gateways_tenant_page_idx;
ALTER TABLE gateways DROP CONSTRAINT gateways_class_check;
ALTER TABLE gateways DROP CONSTRAINT gateways_status_check;
ALTER TABLE gateways DROP COLUMN description;

DROP INDEX api_services_tenant_page_idx;
ALTER TABLE api_services DROP CONSTRAINT api_services_status_check;
ALTER TABLE api_services DROP CONSTRAINT api_services_id_tenant_key;
