// Package store is the data access layer: it opens PostgreSQL and holds the queries of every
// entity, returning typed errors (ErrNotFound, ErrConflict) that the HTTP layer maps once.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/imprun/imprun-server/retry"
)

// Typed errors of the data layer.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// OpenSQL opens a database/sql pool on url and waits, retrying with backoff for up to within,
// until PostgreSQL answers. Each failed attempt is logged so an operator sees why start-up waits.
func OpenSQL(ctx context.Context, url string, within time.Duration, log *slog.Logger) (*sql.DB, error) {
	db, err := OpenDB(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	err = retry.Until(ctx, within, retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}, func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return db.PingContext(pctx)
	}, func(attempt int, wait time.Duration, err error) {
		log.Warn("postgres not reachable yet, retrying", "attempt", attempt, "backoff", wait, "err", err)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres unreachable: %w", err)
	}
	return db, nil
}

// Open wraps an open pool in GORM.
func Open(sqlDB *sql.DB) (*gorm.DB, error) {
	pg, ok := postgres.New(postgres.Config{Conn: sqlDB}).(*postgres.Dialector)
	if !ok {
		return nil, fmt.Errorf("gorm: unexpected postgres dialector")
	}
	db, err := gorm.Open(dialector{pg}, &gorm.Config{
		Logger:                                   logger.Discard,
		TranslateError:                           false,
		DisableForeignKeyConstraintWhenMigrating: true,
		NowFunc:                                  func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	})
	if err != nil {
		return nil, fmt.Errorf("gorm: %w", err)
	}
	return db, nil
}

// dialector is GORM's PostgreSQL dialect, except that it never writes a statement out with its
// arguments (Explain): only a logger reads that text, and the store's discards it. GORM's Scan
// records every statement it runs that way all the same (a regular-expression pass over the SQL,
// every argument formatted), which was a tenth of the allocations of an agent's connect and of
// each snapshot fetch.
type dialector struct{ *postgres.Dialector }

// Explain returns the statement as it is sent, with its placeholders.
func (dialector) Explain(sql string, _ ...any) string { return sql }

var _ = stdlib.GetDefaultDriver // registers the "pgx" database/sql driver

// IsUniqueViolation reports whether err is a unique-constraint violation, optionally of the
// named constraint.
func IsUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return constraint == "" || pgErr.ConstraintName == constraint
	}
	return false
}

// IsForeignKeyViolation reports whether err is a foreign-key violation.
func IsForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// IsUnavailable reports whether err means the database could not be reached or dropped the
// connection (a restart, a failover, a full pool of connections), which a retry may cure,
// rather than that the statement was wrong.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutting down, cannot connect now
			pgErr.Code == "53300": // too many connections
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), pgconn.Timeout(err):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "broken pipe")
}
