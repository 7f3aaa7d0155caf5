package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// EnqueueCommand inserts a command once per dedupe key, retires the older commands of its
// supersede key (never the new one, never commands without a key) and wakes the replicas, all
// only when it inserted; a transaction rolled back keeps none of it. Each wake-up is checked
// by the next notification's id: a wake-up that should not happen would arrive first.
func TestEnqueueCommandOnce(t *testing.T) {
	t.Parallel()
	st, url := newStoreAt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := store.Listen(ctx, url, store.AgentCommandChannel)
	require.NoError(t, err)
	defer l.Close()
	woken := func() string {
		t.Helper()
		ch, payload, err := l.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, store.AgentCommandChannel, ch)
		return payload
	}
	cl, _ := clusterWithAgents(t, st, "c1")
	enqueue := func(dedupe, supersede string) (*models.AgentCommand, bool) {
		t.Helper()
		c := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, Priority: models.PriorityNormal, DedupeKey: dedupe,
			SupersedeKey: supersede, Payload: models.JSONMap{"n": dedupe}}
		created, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
		return c, created
	}
	superseded := func(id uuid.UUID) bool {
		t.Helper()
		got, err := st.GetCommands(ctx, []uuid.UUID{id})
		require.NoError(t, err)
		return got[id].SupersededAt != nil
	}

	a, created := enqueue("a", "publish/1")
	require.True(t, created)
	require.NotEqual(t, uuid.Nil, a.ID)
	require.Equal(t, models.JSONMap{"n": "a"}, a.Payload)
	require.False(t, a.CreatedAt.IsZero())
	require.Equal(t, a.ID.String(), woken())

	again, created := enqueue("a", "publish/1")
	require.False(t, created, "the dedupe key exists")
	require.Equal(t, a.ID, again.ID)
	require.False(t, superseded(a.ID), "a repeat retires nothing, itself included")

	b, created := enqueue("b", "publish/1")
	require.True(t, created)
	require.Equal(t, b.ID.String(), woken(), "the repeat woke no one")
	require.True(t, superseded(a.ID))
	require.False(t, superseded(b.ID))

	c, _ := enqueue("c", "")
	require.Equal(t, c.ID.String(), woken())
	d, _ := enqueue("d", "")
	require.Equal(t, d.ID.String(), woken())
	require.False(t, superseded(c.ID), "commands without a supersede key retire nothing")
	require.False(t, superseded(b.ID))

	rollback := errors.New("rolled back")
	err = st.InTx(ctx, func(ctx context.Context) error {
		c := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, DedupeKey: "e", SupersedeKey: "publish/1"}
		created, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
		require.True(t, created)
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	require.False(t, superseded(b.ID), "the rolled-back command retired nothing")
	f, created := enqueue("e", "publish/1")
	require.True(t, created, "the rolled-back command left no row")
	require.Equal(t, f.ID.String(), woken(), "the rolled-back command woke no one")
	require.True(t, superseded(b.ID))
}
