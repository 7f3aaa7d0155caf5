package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
)

// rowScanner is what a hot read scans its rows through: pgx's rows on the pool, database/sql's
// inside a transaction.
type rowScanner interface {
	Scan(dest ...any) error
}

// readRows runs one read statement (positional $n parameters) and calls each for every row.
//
// Outside a transaction it runs on the pool's pgx connection itself (database/sql's Conn.Raw),
// past GORM's statement building and database/sql's row conversion, which is where the REST
// list spent twice what bare pgx spends per page (BenchmarkRESTList's profile): values arrive
// in pgx's binary format, a uuid as 16 bytes rather than text to parse. The connection stays
// the pool's, so its limits and health checks still apply. Inside InTx it joins the
// transaction through database/sql.
func (s *Store) readRows(ctx context.Context, query string, args []any, each func(rowScanner) error) error {
	s.observed(query)
	if tx, ok := ctx.Value(txKey{}).(*gorm.DB); ok {
		return readSQLRows(ctx, tx.Statement.ConnPool, query, args, each)
	}
	return s.onPgx(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		return eachRow(rows, each)
	})
}

// batchRead is one statement of readBatch.
type batchRead struct {
	query string
	args  []any
	each  func(rowScanner) error
}

// readBatch runs read statements (readRows) in one round trip to Postgres: a pgx batch on the
// pool's connection; inside InTx one after the other in the transaction. Each statement sees
// its own snapshot, as separate statements would.
func (s *Store) readBatch(ctx context.Context, reads ...batchRead) error {
	if _, ok := ctx.Value(txKey{}).(*gorm.DB); ok {
		for _, r := range reads {
			if err := s.readRows(ctx, r.query, r.args, r.each); err != nil {
				return err
			}
		}
		return nil
	}
	b := &pgx.Batch{}
	for _, r := range reads {
		s.observed(r.query)
		b.Queue(r.query, r.args...)
	}
	return s.onPgx(ctx, func(c *pgx.Conn) error {
		br := c.SendBatch(ctx, b)
		for _, r := range reads {
			rows, err := br.Query()
			if err != nil {
				_ = br.Close()
				return err
			}
			if err := eachRow(rows, r.each); err != nil {
				_ = br.Close()
				return err
			}
		}
		return br.Close()
	})
}

// onPgx runs f on the pgx connection of one of the pool's connections (database/sql's
// Conn.Raw): the connection stays the pool's, so its limits and health checks still apply.
func (s *Store) onPgx(ctx context.Context, f func(*pgx.Conn) error) error {
	sqlDB, err := s.pool.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		pc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: driver connection %T is not pgx's", dc)
		}
		// A connection a read broke goes back to database/sql, which drops it: pgx's
		// ResetSession refuses a closed connection before the pool hands it out again.
		return f(pc.Conn())
	})
}

// eachRow calls each for every row of rows and closes them.
func eachRow(rows pgx.Rows, each func(rowScanner) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

func readSQLRows(ctx context.Context, pool gorm.ConnPool, query string, args []any, each func(rowScanner) error) error {
	rs, err := pool.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := each(rs); err != nil {
			return err
		}
	}
	return rs.Err()
}

// execDirect runs one write statement (positional $n parameters) past GORM, on the pool or in
// the transaction of ctx. Its arguments are database/sql's, so Go slices ([]uuid.UUID,
// []string, []*time.Time) go to pgx as they are and travel as binary arrays: GORM would expand
// a slice into a list of parameters, which is why the statements that take arrays through it
// format them as text literals (pgArray), and a broadcast's 10,000 deliveries spent more on
// writing and parsing those than on the rows. Uuids go as bytes (registerTypes).
func (s *Store) execDirect(ctx context.Context, query string, args ...any) error {
	s.observed(query)
	_, err := s.db(ctx).Statement.ConnPool.ExecContext(ctx, query, args...)
	return err
}

// readRow reads the one row of a read statement (readRows) into dest; ErrNotFound when it has
// none.
func (s *Store) readRow(ctx context.Context, query string, args []any, dest ...any) error {
	found := false
	err := s.readRows(ctx, query, args, func(rs rowScanner) error {
		found = true
		return rs.Scan(dest...)
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return err
}

// ObserveDirect calls fn with every statement the store sends past GORM (readRows,
// execDirect), so a test that counts statements through GORM's callbacks counts these too.
// Call it before the store is used.
func (s *Store) ObserveDirect(fn func(query string)) { s.observeDirect = append(s.observeDirect, fn) }

func (s *Store) observed(query string) {
	for _, fn := range s.observeDirect {
		fn(query)
	}
}
