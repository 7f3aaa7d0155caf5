package migrations_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestForeignKeysAreIndexed checks that every foreign key has an index led by its first column
// (a composite key's first column is its selective one: a service, not the tenant). A delete of
// a referenced row (an agent, a command) looks up its referencing rows through the key: without
// such an index each delete reads the whole referencing table, and tables like
// agent_command_deliveries grow with the fleet times the commands. An index whose predicate is
// only that this column is set serves the lookup too. Keys to tenants are left out: the server
// never deletes a tenant.
func TestForeignKeysAreIndexed(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	_, err := newMigrator(t, db).Up(ctx, 0)
	require.NoError(t, err)

	rows, err := db.QueryContext(ctx, `
		SELECT c.conrelid::regclass::text, c.conname
		FROM pg_constraint c
		WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace AND c.confrelid <> 'tenants'::regclass
		  AND NOT EXISTS (
			SELECT 1 FROM pg_index i
			WHERE i.indrelid = c.conrelid
			  AND i.indkey[0] = c.conkey[1]
			  AND (i.indpred IS NULL OR pg_get_expr(i.indpred, i.indrelid) = format('(%s IS NOT NULL)',
				(SELECT quote_ident(a.attname) FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]))))
		ORDER BY 1, 2`)
	require.NoError(t, err)
	defer rows.Close()
	var missing []string
	for rows.Next() {
		var table, name string
		require.NoError(t, rows.Scan(&table, &name))
		missing = append(missing, table+"."+name)
	}
	require.NoError(t, rows.Err())
	require.Empty(t, missing, "foreign keys without an index led by their first column")
}
