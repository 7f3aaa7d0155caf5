package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/migrations"
	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", testharness.Postgres(t).NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func newMigrator(t *testing.T, db *sql.DB) *migrations.Migrator {
	t.Helper()
	m, err := migrations.New(db)
	require.NoError(t, err)
	return m
}

// v1 is what a v1 database holds before the upgrade.
type v1 struct {
	tenant, gw1, gw2, svc1, svc2, product string
	publishes                             []string
}

func seedV1(t *testing.T, ctx context.Context, db *sql.DB) v1 {
	t.Helper()
	var s v1
	q := func(dst *string, query string, args ...any) {
		t.Helper()
		require.NoError(t, db.QueryRowContext(ctx, query, args...).Scan(dst))
	}
	q(&s.tenant, `INSERT INTO tenants (slug, name, type) VALUES ('acme', 'Acme', 'provider') RETURNING id`)
	q(&s.gw1, `INSERT INTO gateways (tenant_id, name) VALUES ($1, 'edge-a') RETURNING id`, s.tenant)
	q(&s.gw2, `INSERT INTO gateways (tenant_id, name) VALUES ($1, 'edge-b') RETURNING id`, s.tenant)
	q(&s.svc1, `INSERT INTO api_services (tenant_id, gateway_id, name) VALUES ($1, $2, 'payments') RETURNING id`, s.tenant, s.gw1)
	q(&s.svc2, `INSERT INTO api_services (tenant_id, gateway_id, name) VALUES ($1, $2, 'orders') RETURNING id`, s.tenant, s.gw2)
	q(&s.product, `INSERT INTO products (tenant_id, name, version, status) VALUES ($1, 'Payments', '1.0', 'active') RETURNING id`, s.tenant)
	for _, gw := range []string{s.gw1, s.gw1, s.gw2} {
		var id string
		q(&id, `INSERT INTO product_publishes (tenant_id, product_id, gateway_id, status) VALUES ($1, $2, $3, 'PUBLISHED') RETURNING id`, s.tenant, s.product, gw)
		s.publishes = append(s.publishes, id)
	}
	return s
}

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(query, args...).Scan(&n))
	return n
}

func columnExists(t *testing.T, db *sql.DB, table, column string) bool {
	return count(t, db, `SELECT count(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = $2`, table, column) == 1
}

// TestV1ToV2Story walks the upgrade an operator makes: a v1 database with publishes, the v2
// migration mapping them to a `default` cluster, the remap tool, and a round trip down and up.
func TestV1ToV2Story(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	m := newMigrator(t, db)

	_, err := m.Up(ctx, 1)
	require.NoError(t, err)
	s := seedV1(t, ctx, db)

	_, err = m.Up(ctx, 2)
	require.NoError(t, err)

	var defaultID string
	require.NoError(t, db.QueryRow(`SELECT id FROM clusters WHERE name = 'default'`).Scan(&defaultID))
	require.Equal(t, 3, count(t, db, `SELECT count(*) FROM product_publishes WHERE cluster_id = $1`, defaultID))
	require.False(t, columnExists(t, db, "api_services", "gateway_id"), "api_services.gateway_id must be gone in v2")
	require.True(t, columnExists(t, db, "product_publishes", "gateway_id"), "a publish keeps its gateway as the template")

	// cluster_id is NOT NULL now: a publish without a cluster is refused by the database itself.
	_, err = db.Exec(`INSERT INTO product_publishes (tenant_id, product_id, gateway_id) VALUES ($1, $2, $3)`, s.tenant, s.product, s.gw1)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "expected a postgres error, got %v", err)
	require.Equal(t, "23502", pgErr.Code, "not_null_violation")
	require.Equal(t, "cluster_id", pgErr.ColumnName)

	// The operator moves gateway edge-a's publishes to a real cluster.
	var realID string
	require.NoError(t, db.QueryRow(`INSERT INTO clusters (name, region) VALUES ('kr-prod-1', 'kr-central') RETURNING id`).Scan(&realID))
	moved, err := migrations.RemapLegacy(ctx, db, s.gw1, realID)
	require.NoError(t, err)
	require.EqualValues(t, 2, moved)
	require.Equal(t, 2, count(t, db, `SELECT count(*) FROM product_publishes WHERE cluster_id = $1 AND gateway_id = $2`, realID, s.gw1))
	require.Equal(t, 1, count(t, db, `SELECT count(*) FROM product_publishes WHERE cluster_id = $1`, defaultID))
	moved, err = migrations.RemapLegacy(ctx, db, s.gw1, realID)
	require.NoError(t, err)
	require.EqualValues(t, 0, moved, "a second remap finds nothing left to move")

	// Down to v1 restores the service->gateway links and keeps every row.
	_, err = m.DownTo(ctx, 1)
	require.NoError(t, err)
	v, err := m.Version(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, v)
	require.False(t, columnExists(t, db, "product_publishes", "cluster_id"))
	require.Equal(t, 3, count(t, db, `SELECT count(*) FROM product_publishes`))
	var gw string
	require.NoError(t, db.QueryRow(`SELECT gateway_id FROM api_services WHERE id = $1`, s.svc1).Scan(&gw))
	require.Equal(t, s.gw1, gw)
	require.NoError(t, db.QueryRow(`SELECT gateway_id FROM api_services WHERE id = $1`, s.svc2).Scan(&gw))
	require.Equal(t, s.gw2, gw)

	// And up again to the newest version: nothing lost.
	_, err = m.Up(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, 3, count(t, db, `SELECT count(*) FROM product_publishes WHERE cluster_id IS NOT NULL`))
	require.Equal(t, 2, count(t, db, `SELECT count(*) FROM api_services`))
	require.Equal(t, 2, count(t, db, `SELECT count(*) FROM gateways`))
}

func TestFreshDatabaseHasNoDefaultCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	m := newMigrator(t, db)
	_, err := m.Up(ctx, 0)
	require.NoError(t, err)
	v, err := m.Version(ctx)
	require.NoError(t, err)
	require.Equal(t, m.Latest(), v)
	require.Zero(t, count(t, db, `SELECT count(*) FROM clusters`))

	_, err = migrations.RemapLegacy(ctx, db, "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002")
	require.ErrorIs(t, err, migrations.ErrNoLegacyCluster)
}

func TestRemapRefusesUnknownTargets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	m := newMigrator(t, db)
	_, err := m.Up(ctx, 1)
	require.NoError(t, err)
	s := seedV1(t, ctx, db)
	_, err = m.Up(ctx, 2)
	require.NoError(t, err)

	_, err = migrations.RemapLegacy(ctx, db, s.gw1, "00000000-0000-0000-0000-0000000000aa")
	require.ErrorContains(t, err, "does not exist")
	var defaultID string
	require.NoError(t, db.QueryRow(`SELECT id FROM clusters WHERE name = 'default'`).Scan(&defaultID))
	_, err = migrations.RemapLegacy(ctx, db, s.gw1, defaultID)
	require.ErrorContains(t, err, "default")
	require.Equal(t, 3, count(t, db, `SELECT count(*) FROM product_publishes WHERE cluster_id = $1`, defaultID))
}

// A migration that fails leaves the schema at the last good version, with nothing half done.
func TestFailedMigrationLeavesLastGoodVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	m := newMigrator(t, db)
	_, err := m.Up(ctx, 1)
	require.NoError(t, err)
	seedV1(t, ctx, db)
	// Something in the way: 00002 creates `clusters`, so a table of that name makes it fail.
	_, err = db.Exec(`CREATE TABLE clusters (id int)`)
	require.NoError(t, err)

	_, err = m.Up(ctx, 0)
	require.Error(t, err)
	v, err := m.Version(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, v)
	require.True(t, columnExists(t, db, "api_services", "gateway_id"), "00002 rolled back whole")
	require.False(t, columnExists(t, db, "product_publishes", "cluster_id"))
	require.Zero(t, count(t, db, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'agents'`))
}
