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

// An acknowledgement stored PassedOn is never an unpassed result; one stored without it is,
// until marked. A repeated acknowledgement changes nothing of an acked row, its mark included.
func TestWriteDeliveriesPassedOn(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-passed", "a1", "a2", "a3")
	cmd := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert, DedupeKey: "p1", SupersedeKey: "credential/p",
		Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
	_, err := st.EnqueueCommand(ctx, cmd)
	require.NoError(t, err)
	at := time.Now().UTC().Add(-time.Minute)
	acked := func(agent uuid.UUID, passed bool) store.DeliveryRecord {
		return store.DeliveryRecord{CommandID: cmd.ID, AgentID: agent, Status: models.DeliveryAcked, At: at, ResultStatus: "succeeded", PassedOn: passed}
	}
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{
		{CommandID: cmd.ID, AgentID: agents[1].ID, Status: models.DeliverySent, At: at},
		// PassedOn on a sent record means nothing.
		{CommandID: cmd.ID, AgentID: agents[2].ID, Status: models.DeliverySent, At: at, PassedOn: true},
	}))
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{acked(agents[0].ID, false), acked(agents[1].ID, true)}))
	unpassed := func() []uuid.UUID {
		rs, err := st.UnpassedResults(ctx, 0, 100)
		require.NoError(t, err)
		var ids []uuid.UUID
		for _, r := range rs {
			if r.CommandID == cmd.ID {
				ids = append(ids, r.AgentID)
			}
		}
		return ids
	}
	require.Equal(t, []uuid.UUID{agents[0].ID}, unpassed(), "a2's sent row became acked and passed on in one statement")

	// A repeat marked passed on does not mark a1's row; a repeat without the mark keeps a2's.
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{acked(agents[0].ID, true), acked(agents[1].ID, false)}))
	require.Equal(t, []uuid.UUID{agents[0].ID}, unpassed())
	// a3's sent record said PassedOn; its acknowledgement without it is unpassed.
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{acked(agents[2].ID, false)}))
	require.ElementsMatch(t, []uuid.UUID{agents[0].ID, agents[2].ID}, unpassed())
}
