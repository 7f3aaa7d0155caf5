package agentgw

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

func TestTokenStates(t *testing.T) {
	t.Parallel()
	c := newTokenStates(time.Hour)
	a, b := uuid.New(), uuid.New()
	st := store.AgentTokenState{Status: models.AgentConnected, ClusterID: uuid.New(), TokenGeneration: 3}

	_, ok, gen := c.get(a)
	require.False(t, ok)
	c.put(a, gen, st)
	_, ok, _ = c.get(a)
	require.False(t, ok, "nothing is kept while the LISTEN connection is down")

	c.setLive(true)
	_, _, gen = c.get(a)
	c.put(a, gen, st)
	got, ok, _ := c.get(a)
	require.True(t, ok)
	require.Equal(t, st, got)

	// A read begun before a drop (of any agent) is not stored: it may predate the change.
	_, ok, gen = c.get(b)
	require.False(t, ok)
	c.drop(a)
	_, ok, _ = c.get(a)
	require.False(t, ok, "a dropped agent is read again")
	c.put(b, gen, st)
	_, ok, _ = c.get(b)
	require.False(t, ok, "a read older than a drop is not kept")

	_, _, gen = c.get(b)
	c.put(b, gen, st)
	c.setLive(false)
	_, ok, _ = c.get(b)
	require.False(t, ok, "losing the connection drops everything")
	c.setLive(true)
	_, ok, _ = c.get(b)
	require.False(t, ok, "and nothing comes back with it")

	short := newTokenStates(time.Millisecond)
	short.setLive(true)
	_, _, gen = short.get(a)
	short.put(a, gen, st)
	time.Sleep(5 * time.Millisecond)
	_, ok, _ = short.get(a)
	require.False(t, ok, "an entry older than the TTL is read again")
}
