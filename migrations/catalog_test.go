package migrations_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// 00005 upgrades the v1 catalog tables in place: a v1 product link gets its tenant, the new
// tables refuse links across tenants, and down removes exactly what up added.
func TestCatalogMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	m := newMigrator(t, db)
	_, err := m.Up(ctx, 1)
	require.NoError(t, err)
	s := seedV1(t, ctx, db)
	_, err = db.Exec(`INSERT INTO product_api_services (product_id, api_service_id) VALUES ($1, $2)`, s.product, s.svc1)
	require.NoError(t, err)
	// A v1 status outside the v2 set must not stop the upgrade (the checks are NOT VALID).
	_, err = db.Exec(`UPDATE gateways SET status = 'legacy' WHERE id = $1`, s.gw2)
	require.NoError(t, err)

	_, err = m.Up(ctx, 0)
	require.NoError(t, err)
	var tenant string
	require.NoError(t, db.QueryRow(`SELECT tenant_id FROM product_api_services WHERE product_id = $1`, s.product).Scan(&tenant))
	require.Equal(t, s.tenant, tenant, "links get the tenant of their product")
	require.True(t, columnExists(t, db, "products", "categories"))

	var other string
	require.NoError(t, db.QueryRow(`INSERT INTO tenants (slug, name, type) VALUES ('initech', 'Initech', 'provider') RETURNING id`).Scan(&other))
	// A route of another tenant on acme's service: refused by the composite foreign key.
	_, err = db.Exec(`INSERT INTO routes (tenant_id, api_service_id, name) VALUES ($1, $2, 'r')`, other, s.svc1)
	require.ErrorContains(t, err, "routes_service_fkey")
	_, err = db.Exec(`INSERT INTO backends (tenant_id, api_service_id, name) VALUES ($1, $2, 'b')`, other, s.svc1)
	require.ErrorContains(t, err, "backends_service_fkey")
	// A policy's scope must match its targets.
	_, err = db.Exec(`INSERT INTO policies (tenant_id, scope, api_service_id, name, type, category) VALUES ($1, 'global', $2, 'p', 'cors', 'security')`, s.tenant, s.svc1)
	require.ErrorContains(t, err, "policies_scope_check")
	// New rows obey the status checks the legacy rows were spared.
	_, err = db.Exec(`UPDATE gateways SET status = 'legacy' WHERE id = $1`, s.gw1)
	require.ErrorContains(t, err, "gateways_status_check")

	// Route policies go with their route, and routes with their service.
	var route string
	require.NoError(t, db.QueryRow(`INSERT INTO routes (tenant_id, api_service_id, name) VALUES ($1, $2, 'r') RETURNING id`, s.tenant, s.svc2).Scan(&route))
	_, err = db.Exec(`INSERT INTO policies (tenant_id, scope, api_service_id, route_id, name, type, category) VALUES ($1, 'route', $2, $3, 'p', 'cors', 'security')`, s.tenant, s.svc2, route)
	require.NoError(t, err)
	_, err = db.Exec(`DELETE FROM api_services WHERE id = $1`, s.svc2)
	require.NoError(t, err)
	require.Zero(t, count(t, db, `SELECT count(*) FROM routes`))
	require.Zero(t, count(t, db, `SELECT count(*) FROM policies`))

	// Down to the version before the catalog, and up again: nothing of v1 lost.
	_, err = m.DownTo(ctx, 4)
	require.NoError(t, err)
	require.False(t, columnExists(t, db, "products", "categories"))
	require.False(t, columnExists(t, db, "product_api_services", "tenant_id"))
	require.Zero(t, count(t, db, `SELECT count(*) FROM information_schema.tables WHERE table_name IN ('routes', 'backends', 'policies', 'plans')`))
	require.Equal(t, 1, count(t, db, `SELECT count(*) FROM product_api_services`))
	_, err = m.Up(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, 1, count(t, db, `SELECT count(*) FROM product_api_services WHERE tenant_id = $1`, s.tenant))
}
