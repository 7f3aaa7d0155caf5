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

// The delivery rows have no foreign keys: WriteDeliveries checks a batch's references itself.
// A row of an agent or command that is gone is left out and the rest of the batch is written;
// deleting an agent or a command deletes its rows, as the keys' cascade did.
func TestDeliveriesFollowTheirAgentsAndCommands(t *testing.T) {
	t.Parallel()
	st, d := newStoreDB(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-refs", "a1", "a2", "a3")
	command := func(key string) *models.AgentCommand {
		c := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert, DedupeKey: key, SupersedeKey: "credential/" + key,
			Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
		return c
	}
	c1, c2 := command("r1"), command("r2")
	at := time.Now().UTC()
	acked := func(c, agent uuid.UUID) store.DeliveryRecord {
		return store.DeliveryRecord{CommandID: c, AgentID: agent, Status: models.DeliveryAcked, At: at, ResultStatus: "succeeded", PassedOn: true}
	}
	_, err := st.DeleteAgent(ctx, agents[2].ID)
	require.NoError(t, err)
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{
		acked(c1.ID, agents[0].ID), acked(c1.ID, agents[1].ID), acked(c2.ID, agents[0].ID), acked(c2.ID, agents[1].ID),
		acked(c1.ID, agents[2].ID),      // deleted agent
		acked(uuid.New(), agents[0].ID), // no such command
		acked(c1.ID, uuid.New()),        // no such agent
	}))
	require.Equal(t, 2, d.CountDeliveries(t, c1.ID, models.DeliveryAcked))
	require.Equal(t, 2, d.CountDeliveries(t, c2.ID, models.DeliveryAcked))
	require.Zero(t, d.CountAgentDeliveries(t, agents[2].ID))

	_, err = st.DeleteAgent(ctx, agents[1].ID)
	require.NoError(t, err)
	require.Zero(t, d.CountAgentDeliveries(t, agents[1].ID))
	require.Equal(t, 1, d.CountDeliveries(t, c1.ID, ""), "a1's row of c1 stays")
	d.DeleteCommand(t, c2.ID)
	require.Zero(t, d.CountDeliveries(t, c2.ID, ""))
	require.Equal(t, 1, d.CountAgentDeliveries(t, agents[0].ID), "a1's row of c1 stays")
}

// A batch and an agent's deletion in flight at once leave no row of the deleted agent, whichever
// comes first: a deletion waits for the batch that locked its agent and then deletes the rows
// it wrote; a batch waits for a deletion in flight and then leaves the agent's rows out.
func TestDeliveriesAndAgentDeletionRace(t *testing.T) {
	t.Parallel()
	st, d := newStoreDB(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-race", "a1", "a2", "a3")
	cmd := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert, DedupeKey: "race", SupersedeKey: "credential/race",
		Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
	_, err := st.EnqueueCommand(ctx, cmd)
	require.NoError(t, err)
	acked := func(agents ...models.Agent) []store.DeliveryRecord {
		var recs []store.DeliveryRecord
		for _, a := range agents {
			recs = append(recs, store.DeliveryRecord{CommandID: cmd.ID, AgentID: a.ID, Status: models.DeliveryAcked, At: time.Now().UTC(), ResultStatus: "succeeded", PassedOn: true})
		}
		return recs
	}
	// holding runs first in a transaction that stays open until the second, started meanwhile,
	// has had time to block on it; it returns whether the second finished before the first
	// committed.
	holding := func(first func(ctx context.Context) error, second func() error) (secondEarly bool) {
		began, release := make(chan struct{}), make(chan struct{})
		txDone := make(chan error, 1)
		go func() {
			txDone <- st.InTx(ctx, func(ctx context.Context) error {
				if err := first(ctx); err != nil {
					return err
				}
				close(began)
				<-release
				return nil
			})
		}()
		<-began
		secondDone := make(chan error, 1)
		go func() { secondDone <- second() }()
		select {
		case err := <-secondDone:
			require.NoError(t, err)
			secondEarly = true
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		require.NoError(t, <-txDone)
		if !secondEarly {
			require.NoError(t, <-secondDone)
		}
		return secondEarly
	}

	// The batch first: a1's deletion waits for it, then deletes a1's row.
	early := holding(func(ctx context.Context) error { return st.WriteDeliveries(ctx, acked(agents[0], agents[1])) },
		func() error { _, err := st.DeleteAgent(ctx, agents[0].ID); return err })
	require.False(t, early, "the deletion waited for the batch's lock of its agent")
	require.Zero(t, d.CountAgentDeliveries(t, agents[0].ID))
	require.Equal(t, 1, d.CountAgentDeliveries(t, agents[1].ID))

	// The deletion first: the batch waits for it, then leaves a3 out and writes a2's row.
	early = holding(func(ctx context.Context) error { _, err := st.DeleteAgent(ctx, agents[2].ID); return err },
		func() error { return st.WriteDeliveries(ctx, acked(agents[1], agents[2])) })
	require.False(t, early, "the batch waited for the deletion of its agent")
	require.Zero(t, d.CountAgentDeliveries(t, agents[2].ID))
	require.Equal(t, 1, d.CountAgentDeliveries(t, agents[1].ID))
}
