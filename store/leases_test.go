package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/testharness"
)

func newStoreDB(t testing.TB) (*store.Store, *storetest.DB) {
	t.Helper()
	d := storetest.Open(t, testharness.Postgres(t).NewDatabase(t))
	return d.Store(), d
}

// The crash sweeper judges a connected agent by its replica's lease; an agent no lease vouches
// for (its replica has none yet, or predates leases) by its row's heartbeat; the sweeping
// replica's own agents never.
func TestStaleSweepJudgesAgentsByTheirReplicasLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, d := newStoreDB(t)
	cluster := d.InsertCluster(t, "kr-1", "kr", `{}`)
	now := time.Now().UTC().Truncate(time.Microsecond)
	old := now.Add(-time.Hour)
	self, live, dead, unleased, empty, deadAll := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for _, l := range []store.GatewayLease{
		{ReplicaID: self, AliveAt: old}, // the sweeper's own, however late, is its watchdog's
		{ReplicaID: live, AliveAt: now},
		{ReplicaID: dead, AliveAt: now.Add(-time.Minute)},
		{ReplicaID: empty, AliveAt: now.Add(-time.Minute)},
		{ReplicaID: deadAll, AliveAt: now.Add(-time.Minute)},
	} {
		l.Name, l.StartedAt = "test", old
		prev, err := st.RenewLease(ctx, l)
		require.NoError(t, err)
		require.True(t, prev.IsZero(), "a new lease has no previous renewal")
	}

	type agent struct{ id, session string }
	add := func(name string, replica *uuid.UUID, hb time.Time) agent {
		id, sid := d.InsertConnectedAgent(t, cluster, name, replica, hb)
		return agent{id, sid}
	}
	ofLive := add("of-live", &live, old)
	ofDead := add("of-dead", &dead, old)
	ofDeadJustClaimed := add("of-dead-new", &dead, now)
	ofSelf := add("of-self", &self, old)
	ofDeadAll := add("of-dead-all", &deadAll, old)
	ofUnleasedOld := add("unleased-old", &unleased, old)
	ofUnleasedNew := add("unleased-new", &unleased, now)
	legacyOld := add("legacy-old", nil, old)
	legacyNew := add("legacy-new", nil, now)

	shown, err := st.GetAgent(ctx, uuid.MustParse(ofLive.id))
	require.NoError(t, err)
	require.WithinDuration(t, now, *shown.LastHeartbeatAt, time.Millisecond, "a connected agent is alive as of its replica's lease")

	marked, err := st.MarkStaleAgentsDisconnected(ctx, self, now.Add(-10*time.Second), "swept")
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range marked {
		got[r.ID.String()] = true
	}
	require.Equal(t, map[string]bool{ofDead.id: true, ofDeadAll.id: true, ofUnleasedOld.id: true, legacyOld.id: true}, got)
	for _, a := range []agent{ofLive, ofDeadJustClaimed, ofSelf, ofUnleasedNew, legacyNew} {
		s, err := d.AgentStatus(a.id)
		require.NoError(t, err)
		require.Equal(t, models.AgentConnected, s, a.id)
	}
	// Each agent marked has its event, written with its status; the others have none.
	for _, a := range []agent{ofDead, ofUnleasedOld, legacyOld} {
		require.Equal(t, "swept", d.LastDisconnectMessage(t, a.id), a.id)
	}
	for _, a := range []agent{ofLive, ofDeadJustClaimed, ofSelf} {
		require.Zero(t, d.CountAgentEvents(t, a.id), a.id)
	}
	swept, err := st.GetAgent(ctx, uuid.MustParse(ofDead.id))
	require.NoError(t, err)
	require.Nil(t, swept.ReplicaID)
	require.Nil(t, swept.SessionID)
	require.WithinDuration(t, now.Add(-time.Minute), *swept.LastHeartbeatAt, time.Millisecond, "the last time its replica vouched for it")

	// The expired leases that hold nothing are gone, also the one whose agents were all just
	// marked; the one still holding an agent stays.
	_, found := d.Lease(t, empty)
	require.False(t, found)
	_, found = d.Lease(t, deadAll)
	require.False(t, found)
	_, found = d.Lease(t, dead)
	require.True(t, found)
	require.Equal(t, 3, d.CountLeases(t))

	// A replica learns which of its streams lost their rows, and how.
	lost, err := st.LostSessions(ctx, []store.HeldSession{
		{AgentID: uuid.MustParse(ofLive.id), SessionID: uuid.MustParse(ofLive.session)},
		{AgentID: uuid.MustParse(ofSelf.id), SessionID: uuid.New()},
		{AgentID: uuid.MustParse(ofDead.id), SessionID: uuid.MustParse(ofDead.session)},
		{AgentID: uuid.New(), SessionID: uuid.New()},
	})
	require.NoError(t, err)
	byAgent := map[string]bool{}
	for _, l := range lost {
		byAgent[l.AgentID.String()] = l.Superseded
	}
	require.Len(t, byAgent, 3)
	require.True(t, byAgent[ofSelf.id], "another session holds the row: superseded")
	require.False(t, byAgent[ofDead.id], "swept: not connected any more")
	require.NotContains(t, byAgent, ofLive.id)

	// A renewal after the lease had gone says so (no previous renewal); one on time gives it.
	prev, err := st.RenewLease(ctx, store.GatewayLease{ReplicaID: empty, Name: "test", StartedAt: old, AliveAt: now})
	require.NoError(t, err)
	require.True(t, prev.IsZero())
	prev, err = st.RenewLease(ctx, store.GatewayLease{ReplicaID: empty, Name: "test", StartedAt: old, AliveAt: now.Add(time.Second)})
	require.NoError(t, err)
	require.WithinDuration(t, now, prev, time.Millisecond)
}

// A replica renews its lease on a connection of its own: with every other connection of the
// pool taken (a connect storm), a renewal on the pool waits, one on the LeaseConn does not;
// after its connection broke, the next renewal takes another.
func TestLeaseConnRenewsWhileThePoolIsBusy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, d := newStoreDB(t)
	lc := st.LeaseConn()
	t.Cleanup(func() { _ = lc.Close() })
	replica, started := uuid.New(), time.Now().UTC().Truncate(time.Microsecond)
	lease := func(at time.Time) store.GatewayLease {
		return store.GatewayLease{ReplicaID: replica, Name: "r", StartedAt: started, AliveAt: at}
	}
	prev, err := lc.Renew(ctx, lease(started))
	require.NoError(t, err)
	require.True(t, prev.IsZero(), "a new lease")

	held, release := d.HoldPool(t, 3, 2) // the LeaseConn has the third
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = st.RenewLease(short, lease(started.Add(time.Second)))
	require.ErrorIs(t, err, context.DeadlineExceeded, "the pool is busy")
	short2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	prev, err = lc.Renew(short2, lease(started.Add(2*time.Second)))
	require.NoError(t, err)
	require.WithinDuration(t, started, prev, time.Millisecond)

	// Its backend ends: the renewal after fails, the next one takes a connection again.
	var n int
	require.NoError(t, held[0].QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%gateway_leases%'`).Scan(&n))
	require.Equal(t, 1, n, "the lease's connection")
	require.Eventually(t, func() bool {
		_, err := lc.Renew(ctx, lease(started.Add(3*time.Second)))
		return err != nil
	}, 5*time.Second, 50*time.Millisecond, "a renewal on the terminated connection fails")
	release()
	prev, err = lc.Renew(ctx, lease(started.Add(4*time.Second)))
	require.NoError(t, err)
	require.WithinDuration(t, started.Add(2*time.Second), prev, time.Millisecond)
}

// The sweep skips a stale agent whose row another transaction holds (a connect claiming it, a
// disconnect releasing it) instead of waiting for it, and marks it at its next pass if it is
// still stale then: a sweep that waited deadlocked with the claims of a connect storm, which
// commit several rows a transaction.
func TestStaleSweepSkipsARowBeingClaimed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, d := newStoreDB(t)
	cluster := d.InsertCluster(t, "kr-1", "kr", `{}`)
	now := time.Now().UTC()
	dead := uuid.New()
	_, err := st.RenewLease(ctx, store.GatewayLease{ReplicaID: dead, Name: "test", StartedAt: now.Add(-time.Hour), AliveAt: now.Add(-time.Minute)})
	require.NoError(t, err)
	locked, _ := d.InsertConnectedAgent(t, cluster, "being-claimed", &dead, now.Add(-time.Hour))
	free, _ := d.InsertConnectedAgent(t, cluster, "free", &dead, now.Add(-time.Hour))
	release := d.LockAgentRow(t, locked)

	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	marked, err := st.MarkStaleAgentsDisconnected(short, uuid.New(), now.Add(-10*time.Second), "swept")
	require.NoError(t, err, "the sweep does not wait for the locked row")
	require.Len(t, marked, 1)
	require.Equal(t, free, marked[0].ID.String())
	s, err := d.AgentStatus(locked)
	require.NoError(t, err)
	require.Equal(t, models.AgentConnected, s)
	_, found := d.Lease(t, dead)
	require.True(t, found, "the lease still holds the skipped agent")

	release()
	marked, err = st.MarkStaleAgentsDisconnected(ctx, uuid.New(), now.Add(-10*time.Second), "swept")
	require.NoError(t, err)
	require.Len(t, marked, 1)
	require.Equal(t, locked, marked[0].ID.String(), "the next pass marks it")
	_, found = d.Lease(t, dead)
	require.False(t, found)
}
