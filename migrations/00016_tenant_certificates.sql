-- Certificates belong to tenants: a tenant registers each certificate its gateway templates
-- may name (by secret name and namespace; never key material), and a template may name only its
-- own tenant's.

-- +goose Up
CREATE TABLE tenant_certificates (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   UUID         NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        VARCHAR(253) NOT NULL,
    namespace   VARCHAR(63)  NOT NULL DEFAULT '',
    description VARCHAR(500) NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT tenant_certificates_name_key UNIQUE (tenant_id, name, namespace)
);
CREATE INDEX tenant_certificates_page_idx ON tenant_certificates (tenant_id, created_at, id);

-- Templates that already name certificates keep working: their references are registered.
INSERT INTO tenant_certificates (tenant_id, name, namespace)
SELECT DISTINCT g.tenant_id, r->>'name', coalesce(r->>'namespace', '')
FROM gateways g, jsonb_array_elements(g.listeners) l, jsonb_array_elements(coalesce(l->'tls'->'certificate_refs', '[]')) r
WHERE r->>'name' IS NOT NULL
ON CONFLICT DO NOTHING;

-- +goose Down
DROP TABLE tenant_certificates;
