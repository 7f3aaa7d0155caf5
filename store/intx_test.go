package store_test

import (
	"context"
	"errors"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/testharness"
)

// newStore returns a Store on a fresh, migrated database of the shared test cluster.
func newStore(t testing.TB) *store.Store {
	t.Helper()
	st, _ := newStoreAt(t)
	return st
}

// newStoreAt is newStore with the URL of its database (for a LISTEN connection of its own).
func newStoreAt(t testing.TB) (*store.Store, string) {
	t.Helper()
	url := testharness.Postgres(t).NewDatabase(t)
	return storetest.Open(t, url).Store(), url
}

func tenant(slug string) *models.Tenant {
	return &models.Tenant{Slug: slug, Name: slug, Type: models.TenantProvider, Status: models.TenantActive}
}

func tenantExists(t *testing.T, st *store.Store, ctx context.Context, id models.Tenant) bool {
	t.Helper()
	_, err := st.GetTenant(ctx, id.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	require.NoError(t, err)
	return true
}

func TestInTx(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	boom := errors.New("boom")

	t.Run("commits every change together", func(t *testing.T) {
		a, b := tenant("commit-a"), tenant("commit-b")
		err := st.InTx(ctx, func(ctx context.Context) error {
			require.NoError(t, st.CreateTenant(ctx, a))
			require.NoError(t, st.CreateTenant(ctx, b))
			require.True(t, tenantExists(t, st, ctx, *a), "the transaction sees its own change")
			require.False(t, tenantExists(t, st, context.Background(), *a), "nobody else sees it before the commit")
			return nil
		})
		require.NoError(t, err)
		require.True(t, tenantExists(t, st, ctx, *a))
		require.True(t, tenantExists(t, st, ctx, *b))
	})

	t.Run("an error rolls every change back", func(t *testing.T) {
		a := tenant("rollback-a")
		err := st.InTx(ctx, func(ctx context.Context) error {
			require.NoError(t, st.CreateTenant(ctx, a))
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.False(t, tenantExists(t, st, ctx, *a))
	})

	t.Run("a panic rolls back and goes on", func(t *testing.T) {
		a := tenant("panic-a")
		require.Panics(t, func() {
			_ = st.InTx(ctx, func(ctx context.Context) error {
				require.NoError(t, st.CreateTenant(ctx, a))
				panic("boom")
			})
		})
		require.False(t, tenantExists(t, st, ctx, *a))
	})

	t.Run("a failed statement rolls back what came before it", func(t *testing.T) {
		a, dup := tenant("conflict-a"), tenant("conflict-a")
		err := st.InTx(ctx, func(ctx context.Context) error {
			require.NoError(t, st.CreateTenant(ctx, a))
			return st.CreateTenant(ctx, dup)
		})
		require.ErrorIs(t, err, store.ErrConflict)
		require.False(t, tenantExists(t, st, ctx, *a))
	})

	t.Run("a nested InTx joins the outer transaction", func(t *testing.T) {
		outer, inner := tenant("nested-outer"), tenant("nested-inner")
		err := st.InTx(ctx, func(ctx context.Context) error {
			require.NoError(t, st.CreateTenant(ctx, outer))
			require.NoError(t, st.InTx(ctx, func(ctx context.Context) error {
				require.True(t, tenantExists(t, st, ctx, *outer), "the inner one sees the outer one's change")
				return st.CreateTenant(ctx, inner)
			}))
			require.False(t, tenantExists(t, st, context.Background(), *inner), "the inner one did not commit on its own")
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.False(t, tenantExists(t, st, ctx, *outer))
		require.False(t, tenantExists(t, st, ctx, *inner), "the outer rollback undid the inner change too")

		// The inner one's error fails the outer one, which rolls back as a whole.
		err = st.InTx(ctx, func(ctx context.Context) error {
			require.NoError(t, st.CreateTenant(ctx, outer))
			return st.InTx(ctx, func(ctx context.Context) error { return boom })
		})
		require.ErrorIs(t, err, boom)
		require.False(t, tenantExists(t, st, ctx, *outer))
	})

	t.Run("a store method with its own transaction joins it", func(t *testing.T) {
		// AddTenantDomain runs a transaction of its own: inside InTx it becomes part of it.
		a := tenant("domains-a")
		err := st.InTx(ctx, func(ctx context.Context) error {
			require.NoError(t, st.CreateTenant(ctx, a))
			require.NoError(t, st.AddTenantDomain(ctx, &models.TenantDomain{TenantID: a.ID, Domain: "domains-a.example.com"}))
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.False(t, tenantExists(t, st, ctx, *a))
		ds, err := st.ListTenantDomains(ctx, a.ID)
		require.NoError(t, err)
		require.Empty(t, ds)
	})
}
