package store_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/store"
)

// ClaimHosts replaces what a publish holds on its cluster with what it claims now, keeps what
// it claims again, and refuses a name another publish holds (nothing of that claim stays once
// its transaction is rolled back).
func TestClaimHosts(t *testing.T) {
	t.Parallel()
	_, st, p1 := storedPublish(t)
	ctx := context.Background()
	p2 := p1
	p2.ID, p2.Hostname = uuid.Nil, "other.example.com"
	require.NoError(t, st.CreatePublish(ctx, &p2))

	heldBy := func(h store.HostPort) map[uuid.UUID]bool {
		t.Helper()
		out := map[uuid.UUID]bool{}
		for _, p := range []uuid.UUID{p1.ID, p2.ID} {
			// Taken "elsewhere" than the other publish: held by p.
			other := p1.ID
			if p == p1.ID {
				other = p2.ID
			}
			taken, err := st.HostTakenElsewhere(ctx, p1.ClusterID, other, h.Hostname, []int{h.Port})
			require.NoError(t, err)
			if taken {
				out[p] = true
			}
		}
		return out
	}
	a, b, c, d := store.HostPort{Port: 80, Hostname: "a.example.com"}, store.HostPort{Port: 80, Hostname: "b.example.com"},
		store.HostPort{Port: 443, Hostname: "c.example.com"}, store.HostPort{Port: 80, Hostname: "d.example.com"}

	require.NoError(t, st.ClaimHosts(ctx, p1, []store.HostPort{a, b, b}), "a name twice is one claim")
	assert.Equal(t, map[uuid.UUID]bool{p1.ID: true}, heldBy(a))
	assert.Equal(t, map[uuid.UUID]bool{p1.ID: true}, heldBy(b))

	require.NoError(t, st.ClaimHosts(ctx, p1, []store.HostPort{b, c}), "b again, c new, a given up")
	assert.Empty(t, heldBy(a))
	assert.Equal(t, map[uuid.UUID]bool{p1.ID: true}, heldBy(b))
	assert.Equal(t, map[uuid.UUID]bool{p1.ID: true}, heldBy(c))

	err := st.InTx(ctx, func(ctx context.Context) error { return st.ClaimHosts(ctx, p2, []store.HostPort{d, b, a}) })
	require.ErrorIs(t, err, store.ErrHostTaken)
	assert.Contains(t, err.Error(), "b.example.com on port 80")
	assert.Empty(t, heldBy(d), "the refused claim's transaction took nothing")
	assert.Empty(t, heldBy(a))
	assert.Equal(t, map[uuid.UUID]bool{p1.ID: true}, heldBy(b))

	require.NoError(t, st.ClaimHosts(ctx, p2, []store.HostPort{a, d}), "a is free again")
	assert.Equal(t, map[uuid.UUID]bool{p2.ID: true}, heldBy(a))
	require.NoError(t, st.ReleaseHosts(ctx, p1.ID))
	require.NoError(t, st.ClaimHosts(ctx, p2, nil), "claiming nothing gives everything up")
	for _, h := range []store.HostPort{a, b, c, d} {
		assert.Empty(t, heldBy(h), h)
	}
}
