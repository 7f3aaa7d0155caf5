package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// clusterWithAgents creates an active cluster and connected agents of it, none of which has
// applied anything.
func clusterWithAgents(t *testing.T, st *store.Store, cluster string, names ...string) (*models.Cluster, []models.Agent) {
	t.Helper()
	ctx := context.Background()
	cl := &models.Cluster{Name: cluster, Region: "r", Status: models.ClusterActive}
	require.NoError(t, st.CreateCluster(ctx, cl))
	agents := make([]models.Agent, len(names))
	for i, name := range names {
		agents[i] = models.Agent{ClusterID: cl.ID, Name: name, Status: models.AgentConnected, TokenGeneration: 1,
			Applied: models.JSON[[]models.AppliedRevision]{V: []models.AppliedRevision{}}}
		require.NoError(t, st.CreateAgent(ctx, &agents[i]))
	}
	return cl, agents
}

// An agent's sync inputs are the cluster's, narrowed to that agent: the same desired state,
// its own row, repairs, deliveries and pending credential commands, nothing of the others.
func TestAgentSyncInputsAreTheClustersNarrowedToTheAgent(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c1", "a1", "a2", "a3")
	a1, a2 := agents[0].ID, agents[1].ID
	deploy := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, DedupeKey: "d1", SupersedeKey: "publish/p1",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Checksum: "sum"})}
	repair := &models.AgentCommand{ClusterID: cl.ID, AgentID: &a2, Kind: models.CommandDeploy, Priority: models.PriorityRepair, DedupeKey: "r1",
		SupersedeKey: "repair/" + a2.String() + "/p1", Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Attempt: 1})}
	cred := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert, DedupeKey: "c1", SupersedeKey: "credential/x",
		Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
	for _, c := range []*models.AgentCommand{deploy, repair, cred} {
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
	}
	now := time.Now().UTC()
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{
		{CommandID: deploy.ID, AgentID: a1, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{"message": "ok"}},
		{CommandID: deploy.ID, AgentID: a2, Status: models.DeliverySent, At: now},
		{CommandID: cred.ID, AgentID: a2, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{}},
	}))

	whole, err := st.ClusterSyncInputs(ctx, cl.ID)
	require.NoError(t, err)
	require.Len(t, whole.Agents, 3)
	for _, a := range agents {
		got, err := st.AgentSyncInputs(ctx, cl.ID, a.ID)
		require.NoError(t, err)
		require.Equal(t, narrowed(whole, a.ID), got, "agent %s", a.Name)
	}
	require.Equal(t, 1, whole.CredentialsPending[a1], "the credential a1 has not acknowledged")
	require.NotContains(t, whole.CredentialsPending, a2)

	// What the statements read, field by field.
	require.Equal(t, cl.ID, whole.Cluster.ID)
	require.Equal(t, "c1", whole.Cluster.Name)
	require.Equal(t, models.DriftRepair, whole.Cluster.DriftPolicy)
	require.Equal(t, []string{"a1", "a2", "a3"}, []string{whole.Agents[0].Name, whole.Agents[1].Name, whole.Agents[2].Name})
	require.Equal(t, models.AgentConnected, whole.Agents[0].Status)
	require.Equal(t, cl.ID, whole.Agents[0].ClusterID)
	require.NotNil(t, whole.Agents[0].Applied.V)
	require.Len(t, whole.Deploys, 2)
	for _, d := range whole.Deploys {
		require.Equal(t, "p1", d.PublishID)
		require.Equal(t, 2, d.Revision)
		if d.AgentID == nil {
			require.Equal(t, deploy.ID, d.CommandID)
			require.Equal(t, "sum", d.Checksum)
		} else {
			require.Equal(t, repair.ID, d.CommandID)
			require.Equal(t, 1, d.Attempt)
		}
	}
	require.Len(t, whole.Deliveries, 2)
	for _, d := range whole.Deliveries {
		if d.AgentID == a1 {
			require.Equal(t, models.DeliveryAcked, d.Status)
			require.Equal(t, "succeeded", d.ResultStatus)
			require.Equal(t, "ok", d.Message)
			require.NotNil(t, d.AckedAt)
		} else {
			require.Equal(t, models.DeliverySent, d.Status)
			require.Nil(t, d.AckedAt)
		}
	}

	// The same inside a transaction (the statements then run one after the other in it).
	require.NoError(t, st.InTx(ctx, func(ctx context.Context) error {
		got, err := st.ClusterSyncInputs(ctx, cl.ID)
		require.NoError(t, err)
		require.Equal(t, whole, got)
		return nil
	}))

	_, err = st.AgentSyncInputs(ctx, uuid.New(), a1)
	require.ErrorIs(t, err, store.ErrNotFound, "an unknown cluster")
}

// narrowed is what of a cluster's sync inputs concerns the agents ids: the desired state, their
// rows, repairs, deliveries and pending credential commands.
func narrowed(whole store.SyncInputs, ids ...uuid.UUID) store.SyncInputs {
	keep := func(id uuid.UUID) bool { return slices.Contains(ids, id) }
	want := store.SyncInputs{Cluster: whole.Cluster, Credentials: whole.Credentials, CredentialsPending: map[uuid.UUID]int{}}
	for _, x := range whole.Agents {
		if keep(x.ID) {
			want.Agents = append(want.Agents, x)
		}
	}
	for _, d := range whole.Deploys {
		if d.AgentID == nil || keep(*d.AgentID) {
			want.Deploys = append(want.Deploys, d)
		}
	}
	for _, d := range whole.Deliveries {
		if keep(d.AgentID) {
			want.Deliveries = append(want.Deliveries, d)
		}
	}
	for id, n := range whole.CredentialsPending {
		if keep(id) {
			want.CredentialsPending[id] = n
		}
	}
	return want
}

// A replica's sync inputs of a cluster are the cluster's narrowed to the agents whose rows name
// it; the reporting replica's also to those no live replica holds (no replica, or one whose
// lease is gone or stale). Every agent is then in exactly one live replica's share.
func TestHeldSyncInputsAreTheClustersNarrowedToAReplicasAgents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, d := newStoreDB(t)
	cluster := d.InsertCluster(t, "kr-1", "kr", `{}`)
	clusterID := uuid.MustParse(cluster)
	now := time.Now().UTC()
	liveSince := now.Add(-30 * time.Second)
	r1, r2, dead, gone := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for _, l := range []store.GatewayLease{
		{ReplicaID: r1, StartedAt: now.Add(-time.Hour), AliveAt: now},
		{ReplicaID: r2, StartedAt: now.Add(-2 * time.Hour), AliveAt: now},
		{ReplicaID: dead, StartedAt: now.Add(-3 * time.Hour), AliveAt: now.Add(-time.Minute)},
	} {
		l.Name = "test"
		_, err := st.RenewLease(ctx, l)
		require.NoError(t, err)
	}
	add := func(name string, replica *uuid.UUID) uuid.UUID {
		id, _ := d.InsertConnectedAgent(t, cluster, name, replica, now)
		return uuid.MustParse(id)
	}
	of1a, of1b, of2 := add("of-r1-a", &r1), add("of-r1-b", &r1), add("of-r2", &r2)
	ofDead, ofGone, ofNone := add("of-dead", &dead), add("of-gone", &gone), add("of-none", nil)
	other, _ := clusterWithAgents(t, st, "other", "elsewhere")
	deploy := &models.AgentCommand{ClusterID: clusterID, Kind: models.CommandDeploy, DedupeKey: "d1", SupersedeKey: "publish/p1",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Checksum: "sum"})}
	cred := &models.AgentCommand{ClusterID: clusterID, Kind: models.CommandCredentialUpsert, DedupeKey: "c1", SupersedeKey: "credential/x",
		Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
	cmds := []*models.AgentCommand{deploy, cred}
	for _, a := range []uuid.UUID{of1b, of2, ofDead} {
		cmds = append(cmds, &models.AgentCommand{ClusterID: clusterID, AgentID: &a, Kind: models.CommandDeploy, Priority: models.PriorityRepair,
			DedupeKey: "r-" + a.String(), SupersedeKey: "repair/" + a.String() + "/p1", Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Attempt: 1})})
	}
	for _, c := range cmds {
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
	}
	var recs []store.DeliveryRecord
	for _, a := range []uuid.UUID{of1a, of2, ofGone} {
		recs = append(recs, store.DeliveryRecord{CommandID: deploy.ID, AgentID: a, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{}},
			store.DeliveryRecord{CommandID: cred.ID, AgentID: a, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{}})
	}
	require.NoError(t, st.WriteDeliveries(ctx, recs))

	whole, err := st.ClusterSyncInputs(ctx, clusterID)
	require.NoError(t, err)
	require.Len(t, whole.Agents, 6)
	require.Len(t, whole.Deploys, 4)
	require.Len(t, whole.Deliveries, 3)
	require.Len(t, whole.CredentialsPending, 3, "of-r1-b, of-dead and of-none have not acknowledged the credential")
	for _, c := range []struct {
		name    string
		replica uuid.UUID
		unheld  bool
		want    []uuid.UUID
	}{
		{"r1", r1, false, []uuid.UUID{of1a, of1b}},
		{"r2", r2, false, []uuid.UUID{of2}},
		{"r2 with the unheld", r2, true, []uuid.UUID{of2, ofDead, ofGone, ofNone}},
		{"a replica without agents", uuid.New(), false, nil},
	} {
		got, err := st.HeldSyncInputs(ctx, clusterID, c.replica, c.unheld, liveSince)
		require.NoError(t, err, c.name)
		// Deliveries come in no order.
		want := narrowed(whole, c.want...)
		require.ElementsMatch(t, want.Deliveries, got.Deliveries, c.name)
		want.Deliveries, got.Deliveries = nil, nil
		require.Equal(t, want, got, c.name)
	}
	_, err = st.HeldSyncInputs(ctx, uuid.New(), r1, true, liveSince)
	require.ErrorIs(t, err, store.ErrNotFound, "an unknown cluster")

	// The reporter is the live replica that started first; the clusters it reports the unheld
	// agents of are those that have any.
	id, ok, err := st.OldestLiveReplica(ctx, liveSince)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, r2, id, "r2 started before r1; the dead replica started first but is not live")
	_, ok, err = st.OldestLiveReplica(ctx, now.Add(time.Minute))
	require.NoError(t, err)
	require.False(t, ok, "no lease is alive since then")
	ids, err := st.ClustersWithUnheldAgents(ctx, liveSince)
	require.NoError(t, err)
	require.Contains(t, ids, clusterID)
	require.Contains(t, ids, other.ID, "its agent names no replica")
	require.Len(t, ids, 2)
}

// An agent's pending commands are the cluster's and its own that it has not acknowledged and
// that nothing superseded, revocations first, then oldest first, every field as stored.
func TestPendingCommandsOfAnAgent(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c1", "a1", "a2")
	other, _ := clusterWithAgents(t, st, "c2")
	a1, a2 := agents[0].ID, agents[1].ID
	old := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, Priority: models.PriorityNormal, DedupeKey: "d1", SupersedeKey: "publish/p1",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 1})}
	deploy := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, Priority: models.PriorityNormal, DedupeKey: "d2", SupersedeKey: "publish/p1",
		Payload:      models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Checksum: "sum"}),
		TraceContext: models.TraceContext{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	acked := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, Priority: models.PriorityNormal, DedupeKey: "d3", SupersedeKey: "publish/p2",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p2", Revision: 1})}
	repair := &models.AgentCommand{ClusterID: cl.ID, AgentID: &a1, Kind: models.CommandDeploy, Priority: models.PriorityRepair, DedupeKey: "r1",
		SupersedeKey: "repair/" + a1.String() + "/p2", Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p2", Revision: 1, Attempt: 1})}
	forA2 := &models.AgentCommand{ClusterID: cl.ID, AgentID: &a2, Kind: models.CommandDeploy, Priority: models.PriorityRepair, DedupeKey: "r2",
		SupersedeKey: "repair/" + a2.String() + "/p2", Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p2", Revision: 1, Attempt: 1})}
	revoke := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialRevoke, Priority: models.PriorityRevocation, DedupeKey: "k1",
		SupersedeKey: "credential/x", Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 2})}
	elsewhere := &models.AgentCommand{ClusterID: other.ID, Kind: models.CommandDeploy, Priority: models.PriorityNormal, DedupeKey: "o1",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p9", Revision: 1})}
	for _, c := range []*models.AgentCommand{old, deploy, acked, repair, forA2, revoke, elsewhere} {
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
	}
	now := time.Now().UTC()
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{
		{CommandID: acked.ID, AgentID: a1, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{}},
		{CommandID: deploy.ID, AgentID: a1, Status: models.DeliverySent, At: now}, // sent, not acknowledged: still pending
	}))

	got, err := st.PendingCommands(ctx, cl.ID, a1)
	require.NoError(t, err)
	ids := make([]uuid.UUID, len(got))
	for i, c := range got {
		ids[i] = c.ID
	}
	require.Equal(t, []uuid.UUID{revoke.ID, repair.ID, deploy.ID}, ids, "revocation, repair, then the live deploy; not the superseded, acknowledged, other agent's or other cluster's")

	d := got[2]
	require.Equal(t, cl.ID, d.ClusterID)
	require.Nil(t, d.AgentID)
	require.Equal(t, models.CommandDeploy, d.Kind)
	require.Equal(t, models.PriorityNormal, d.Priority)
	require.Equal(t, "d2", d.DedupeKey)
	require.Equal(t, "publish/p1", d.SupersedeKey)
	var p models.DeployPayload
	require.NoError(t, models.FromJSONMap(d.Payload, &p))
	require.Equal(t, models.DeployPayload{PublishID: "p1", Revision: 2, Checksum: "sum"}, p)
	require.Equal(t, deploy.TraceContext, d.TraceContext)
	require.WithinDuration(t, deploy.CreatedAt, d.CreatedAt, time.Millisecond)
	require.Nil(t, d.SupersededAt)
	require.NotNil(t, got[1].AgentID)
	require.Equal(t, a1, *got[1].AgentID)

	// A connect reads them with the agent's sync inputs, in one round trip, the same.
	observed := 0
	st.ObserveDirect(func(string) { observed++ })
	in, pending, err := st.ConnectInputs(ctx, cl.ID, a1)
	require.NoError(t, err)
	require.Equal(t, got, pending)
	require.Equal(t, 7, observed, "six sync reads and the pending commands, in one batch")
	alone, err := st.AgentSyncInputs(ctx, cl.ID, a1)
	require.NoError(t, err)
	require.Equal(t, alone, in)
	_, _, err = st.ConnectInputs(ctx, uuid.New(), a1)
	require.ErrorIs(t, err, store.ErrNotFound)

	// Inside a transaction the same read joins it.
	require.NoError(t, st.InTx(ctx, func(ctx context.Context) error {
		inTx, err := st.PendingCommands(ctx, cl.ID, a1)
		require.Equal(t, got, inTx)
		return err
	}))
	forSecond, err := st.PendingCommands(ctx, cl.ID, a2)
	require.NoError(t, err)
	ids = ids[:0]
	for _, c := range forSecond {
		ids = append(ids, c.ID)
	}
	require.Equal(t, []uuid.UUID{revoke.ID, forA2.ID, deploy.ID, acked.ID}, ids, "what a1 acknowledged is still a2's to do")
}

// ClusterName, which every agent connect asks: the name, "" for no such cluster, and the same
// inside a transaction.
func TestClusterName(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, _ := clusterWithAgents(t, st, "edge-eu")
	name, err := st.ClusterName(ctx, cl.ID)
	require.NoError(t, err)
	require.Equal(t, "edge-eu", name)
	name, err = st.ClusterName(ctx, uuid.New())
	require.NoError(t, err)
	require.Empty(t, name)
	require.NoError(t, st.InTx(ctx, func(ctx context.Context) error {
		name, err := st.ClusterName(ctx, cl.ID)
		require.Equal(t, "edge-eu", name)
		return err
	}))
}

// ClaimAgentByTokenAndRead claims an agent's row only for a token of its generation and
// cluster and an agent not revoked; a refusal says what the row holds and reads nothing.
func TestClaimAgentByToken(t *testing.T) {
	t.Parallel()
	claim := func(st *store.Store, ctx context.Context, c store.AgentConnection, gen int) (store.AgentTokenClaim, error) {
		cl, read, err := st.ClaimAgentByTokenAndRead(ctx, c, gen)
		if err == nil && cl.Claimed != (read != nil) {
			t.Errorf("claimed %v, read %v", cl.Claimed, read)
		}
		return cl, err
	}
	st := newStore(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-claim", "a1", "a2")
	other, _ := clusterWithAgents(t, st, "c-other")
	a1, a2 := agents[0].ID, agents[1].ID
	conn := func(agent, cluster uuid.UUID) store.AgentConnection {
		return store.AgentConnection{AgentID: agent, ClusterID: cluster, SessionID: uuid.New(), ReplicaID: uuid.New(), IP: "10.0.0.9", At: time.Now().UTC(), Hostname: "h"}
	}

	c := conn(a1, cl.ID)
	got, err := claim(st, ctx, c, 1)
	require.NoError(t, err)
	require.True(t, got.Claimed)
	require.Equal(t, "c-claim", got.ClusterName)
	a, err := st.GetAgent(ctx, a1)
	require.NoError(t, err)
	require.Equal(t, c.SessionID, *a.SessionID, "the row names the new session")
	require.Equal(t, "h", a.Hostname)

	for name, tc := range map[string]struct {
		c    store.AgentConnection
		gen  int
		want store.AgentTokenClaim
	}{
		"retired generation": {conn(a2, cl.ID), 2, store.AgentTokenClaim{ClusterName: "c-claim", Found: true,
			State: store.AgentTokenState{Status: models.AgentConnected, ClusterID: cl.ID, TokenGeneration: 1}}},
		"another cluster": {conn(a2, other.ID), 1, store.AgentTokenClaim{ClusterName: "c-other", Found: true,
			State: store.AgentTokenState{Status: models.AgentConnected, ClusterID: cl.ID, TokenGeneration: 1}}},
		"no such agent": {conn(uuid.New(), cl.ID), 1, store.AgentTokenClaim{ClusterName: "c-claim"}},
	} {
		got, err := claim(st, ctx, tc.c, tc.gen)
		require.NoError(t, err, name)
		require.Equal(t, tc.want, got, name)
	}
	a, err = st.GetAgent(ctx, a2)
	require.NoError(t, err)
	require.Nil(t, a.SessionID, "a refused claim changes nothing")

	_, err = st.RevokeAgent(ctx, a1, "test")
	require.NoError(t, err)
	got, err = claim(st, ctx, conn(a1, cl.ID), 1)
	require.NoError(t, err)
	require.False(t, got.Claimed)
	require.Equal(t, models.AgentRevoked, got.State.Status)
}

// ClaimAgentByTokenAndRead reads, in the claim's round trip, what ConnectInputs reads after
// it: the agent's sync inputs as the claim left them and its pending commands.
func TestClaimAgentByTokenAndRead(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-read", "a1", "a2")
	a1 := agents[0].ID
	forA1 := &models.AgentCommand{ClusterID: cl.ID, AgentID: &a1, Kind: models.CommandCredentialRevoke, DedupeKey: "r1",
		Payload: models.ToJSONMap(models.CredentialRevokePayload{CredentialID: uuid.NewString()})}
	all := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, DedupeKey: "d1", SupersedeKey: "publish/p1",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 1, Checksum: "sum"})}
	for _, c := range []*models.AgentCommand{forA1, all} {
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
	}
	c := store.AgentConnection{AgentID: a1, ClusterID: cl.ID, SessionID: uuid.New(), ReplicaID: uuid.New(), IP: "10.0.0.9", At: time.Now().UTC(),
		CredentialChecksum: "sum-1", Applied: []models.AppliedRevision{{PublishID: "p0", Revision: 3}}}
	observed := 0
	st.ObserveDirect(func(string) { observed++ })
	got, read, err := st.ClaimAgentByTokenAndRead(ctx, c, 1)
	require.NoError(t, err)
	require.True(t, got.Claimed)
	require.NotNil(t, read)
	require.Equal(t, 8, observed, "the claim and the seven reads of ConnectInputs, in one batch")

	in, pending, err := st.ConnectInputs(ctx, cl.ID, a1)
	require.NoError(t, err)
	require.Equal(t, in, read.Inputs, "the reads see the claim")
	require.Equal(t, pending, read.Pending)
	require.Len(t, read.Pending, 2)
	require.Equal(t, models.AgentConnected, read.Inputs.Agents[0].Status)
	require.Equal(t, "sum-1", read.Inputs.Agents[0].CredentialChecksum)

	// A refused claim reads nothing it returns.
	got, read, err = st.ClaimAgentByTokenAndRead(ctx, store.AgentConnection{AgentID: agents[1].ID, ClusterID: cl.ID, SessionID: uuid.New(), ReplicaID: uuid.New(), At: time.Now().UTC()}, 7)
	require.NoError(t, err)
	require.False(t, got.Claimed)
	require.Nil(t, read)
}

// An agent that reports the desired credential set has nothing pending, whatever it has not
// acknowledged; one that reports another set, or none, is counted. The cluster's inputs and
// each agent's own agree.
func TestCredentialsPendingAreCountedOfAgentsThatDoNotReportTheDesiredSet(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl := &models.Cluster{Name: "c1", Region: "r", Status: models.ClusterActive}
	require.NoError(t, st.CreateCluster(ctx, cl))
	desired := store.CredentialChecksum(nil) // the cluster has no credential rolled out
	ids := map[string]uuid.UUID{}
	for name, sum := range map[string]string{"reports-desired": desired, "reports-other": "0badc0de", "reports-none": ""} {
		a := models.Agent{ClusterID: cl.ID, Name: name, Status: models.AgentConnected, TokenGeneration: 1, CredentialChecksum: sum,
			Applied: models.JSON[[]models.AppliedRevision]{V: []models.AppliedRevision{}}}
		require.NoError(t, st.CreateAgent(ctx, &a))
		ids[name] = a.ID
	}
	for i := range 2 {
		_, err := st.EnqueueCommand(ctx, &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert,
			DedupeKey: fmt.Sprint("c", i), SupersedeKey: fmt.Sprint("credential/", i),
			Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})})
		require.NoError(t, err)
	}
	want := map[uuid.UUID]int{ids["reports-other"]: 2, ids["reports-none"]: 2}
	whole, err := st.ClusterSyncInputs(ctx, cl.ID)
	require.NoError(t, err)
	require.Equal(t, want, whole.CredentialsPending)
	for name, id := range ids {
		one, err := st.AgentSyncInputs(ctx, cl.ID, id)
		require.NoError(t, err)
		require.Equal(t, narrowed(whole, id).CredentialsPending, one.CredentialsPending, name)
	}
	held, err := st.HeldSyncInputs(ctx, cl.ID, uuid.New(), true, time.Now())
	require.NoError(t, err)
	require.Equal(t, want, held.CredentialsPending, "every agent is unheld")
}

// A cluster with more agents behind than are looked up pair by pair has its pending
// credentials counted from its acknowledgements at once; both ways give every agent the count
// worked out here from the same deliveries: cluster-wide and own commands, acknowledged,
// merely sent or never sent, a superseded command and a deploy not counted, a revoked agent
// not counted, another cluster's acknowledgements not counted.
func TestCredentialsPendingOfManyAgentsAreTheSameCountedEitherWay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStore(t)
	const agents = 40 // more than credentialsPendingProbed
	cluster := func(name string) (uuid.UUID, []models.Agent) {
		cl := &models.Cluster{Name: name, Region: "r", Status: models.ClusterActive}
		require.NoError(t, st.CreateCluster(ctx, cl))
		as := make([]models.Agent, agents)
		for i := range as {
			as[i] = models.Agent{ClusterID: cl.ID, Name: fmt.Sprint("agent-", i), Status: models.AgentConnected, TokenGeneration: 1,
				Applied: models.JSON[[]models.AppliedRevision]{V: []models.AppliedRevision{}}}
			if i == 1 {
				as[i].Status = models.AgentRevoked
			}
			require.NoError(t, st.CreateAgent(ctx, &as[i]))
		}
		return cl.ID, as
	}
	id, as := cluster("many")
	otherID, others := cluster("other")
	enqueue := func(cluster uuid.UUID, agent *uuid.UUID, kind, key string) uuid.UUID {
		c := &models.AgentCommand{ClusterID: cluster, AgentID: agent, Kind: kind, DedupeKey: uuid.NewString(), SupersedeKey: key,
			Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
		return c.ID
	}
	deliver := func(cmd uuid.UUID, agent uuid.UUID, status string) {
		require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{{CommandID: cmd, AgentID: agent, Status: status, At: time.Now(), ResultStatus: "succeeded", PassedOn: true}}))
	}
	superseded := enqueue(id, nil, models.CommandCredentialUpsert, "credential/a")
	wide := []uuid.UUID{
		enqueue(id, nil, models.CommandCredentialUpsert, "credential/a"), // supersedes the one above
		enqueue(id, nil, models.CommandCredentialUpsert, "credential/b"),
		enqueue(id, nil, models.CommandCredentialRevoke, "credential/c"),
	}
	deploy := enqueue(id, nil, models.CommandDeploy, "")
	own2 := enqueue(id, &as[2].ID, models.CommandCredentialUpsert, "credential/own-2")
	own3 := enqueue(id, &as[3].ID, models.CommandCredentialUpsert, "credential/own-3")
	otherCmd := enqueue(otherID, nil, models.CommandCredentialUpsert, "credential/other") // keys name their cluster
	want := map[uuid.UUID]int{}
	for i, a := range as {
		n := 0
		for j, c := range wide {
			switch (i + j) % 3 {
			case 0:
				deliver(c, a.ID, models.DeliveryAcked)
			case 1:
				deliver(c, a.ID, models.DeliverySent)
				n++
			default:
				n++
			}
		}
		deliver(superseded, a.ID, models.DeliverySent)
		deliver(deploy, a.ID, models.DeliverySent)
		deliver(otherCmd, others[i].ID, models.DeliveryAcked)
		switch i {
		case 2:
			n++ // its own command, not acknowledged
		case 3:
			deliver(own3, a.ID, models.DeliveryAcked)
		case 4:
			deliver(own2, a.ID, models.DeliveryAcked) // not its command: its acknowledgement counts for nothing
		}
		if n > 0 && a.Status != models.AgentRevoked {
			want[a.ID] = n
		}
	}
	whole, err := st.ClusterSyncInputs(ctx, id)
	require.NoError(t, err)
	require.Equal(t, want, whole.CredentialsPending, "counted at once")
	for _, a := range as {
		one, err := st.AgentSyncInputs(ctx, id, a.ID)
		require.NoError(t, err)
		require.Equal(t, narrowed(whole, a.ID).CredentialsPending, one.CredentialsPending, "pair by pair: %s", a.Name)
	}
}
