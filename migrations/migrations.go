// Package migrations embeds the SQL schema migrations and applies them with goose.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

//go:embed *.sql
var files embed.FS

// FS returns the embedded migration files.
func FS() fs.FS { return files }

// Migrator applies the embedded migrations to one database.
type Migrator struct {
	provider *goose.Provider
}

// New returns a Migrator for db. Each migration file runs in its own transaction, so a failing
// one leaves the schema at the last good version.
func New(db *sql.DB) (*Migrator, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, files)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return &Migrator{provider: p}, nil
}

// Up applies every pending migration, or those up to and including version to when to > 0.
func (m *Migrator) Up(ctx context.Context, to int64) ([]*goose.MigrationResult, error) {
	if to > 0 {
		return m.provider.UpTo(ctx, to)
	}
	return m.provider.Up(ctx)
}

// Down rolls back the newest applied migration, or every migration above version to when
// to >= 0 is given through DownTo.
func (m *Migrator) Down(ctx context.Context) (*goose.MigrationResult, error) {
	return m.provider.Down(ctx)
}

// DownTo rolls back to version to (0 removes everything).
func (m *Migrator) DownTo(ctx context.Context, to int64) ([]*goose.MigrationResult, error) {
	return m.provider.DownTo(ctx, to)
}

// Version returns the current schema version (0 when nothing is applied).
func (m *Migrator) Version(ctx context.Context) (int64, error) {
	return m.provider.GetDBVersion(ctx)
}

// Status lists every known migration with whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]*goose.MigrationStatus, error) {
	return m.provider.Status(ctx)
}

// Latest is the newest migration version embedded in the binary.
func (m *Migrator) Latest() int64 {
	srcs := m.provider.ListSources()
	if len(srcs) == 0 {
		return 0
	}
	return srcs[len(srcs)-1].Version
}

// ErrNoLegacyCluster is returned by RemapLegacy when the migration made no default cluster.
var ErrNoLegacyCluster = errors.New("there is no `default` cluster: migration 00002 found no legacy publishes")

// RemapLegacy moves the legacy publishes of one gateway from the `default` cluster made by
// migration 00002 to a real cluster and returns how many rows moved.
func RemapLegacy(ctx context.Context, db *sql.DB, gatewayID, clusterID string) (int64, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op

	var defaultID string
	err = tx.QueryRowContext(ctx, `SELECT id FROM clusters WHERE name = 'default'`).Scan(&defaultID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNoLegacyCluster
	}
	if err != nil {
		return 0, fmt.Errorf("find default cluster: %w", err)
	}
	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM clusters WHERE id = $1)`, clusterID).Scan(&exists); err != nil {
		return 0, fmt.Errorf("find cluster %s: %w", clusterID, err)
	}
	if !exists {
		return 0, fmt.Errorf("cluster %s does not exist", clusterID)
	}
	if clusterID == defaultID {
		return 0, errors.New("the target cluster is the `default` cluster itself")
	}
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM gateways WHERE id = $1)`, gatewayID).Scan(&exists); err != nil {
		return 0, fmt.Errorf("find gateway %s: %w", gatewayID, err)
	}
	if !exists {
		return 0, fmt.Errorf("gateway %s does not exist", gatewayID)
	}
	res, err := tx.ExecContext(ctx,
		`UPDATE product_publishes SET cluster_id = $1, updated_at = now() WHERE gateway_id = $2 AND cluster_id = $3`,
		clusterID, gatewayID, defaultID)
	if err != nil {
		return 0, fmt.Errorf("remap publishes: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, tx.Commit()
}
