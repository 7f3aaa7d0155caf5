package agentgw_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// heartbeatingAgent is an agent stream that only heartbeats (nothing it reports ever changes),
// as most of a fleet does most of the time.
type heartbeatingAgent struct {
	id     string
	cancel context.CancelFunc
	closed chan *agentv1.Close // the server's Close, if it sent one
	done   chan struct{}       // the stream ended
}

// connectHeartbeating connects the registered agent id (token generation 1) to addr and
// heartbeats every interval until the test ends.
func connectHeartbeating(t *testing.T, f *fixture, addr string, id uuid.UUID) *heartbeatingAgent {
	t.Helper()
	jwt, _ := f.env.Replica.Gateway.Signer().Mint(id, uuid.MustParse(f.clusterID), 1)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := agentv1.NewAgentServiceClient(conn).Connect(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: &agentv1.ConnectRequest{
		AgentVersion: "idle", Hostname: "idle", Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: jwt}}}}))
	first, err := stream.Recv()
	require.NoError(t, err)
	// A JWT connect answers with the agent's identity, its cluster's name (read with the token
	// state) and a fresh token of the same generation.
	cr := first.GetConnectResponse()
	require.NotNil(t, cr)
	require.Equal(t, id.String(), cr.GetAgentId())
	require.Equal(t, f.clusterID, cr.GetClusterId())
	require.Equal(t, "kr-prod-1", cr.GetClusterName())
	vt, err := f.env.Replica.Gateway.Signer().Verify(cr.GetAgentJwt())
	require.NoError(t, err)
	require.Equal(t, agentgw.VerifiedToken{AgentID: id, ClusterID: uuid.MustParse(f.clusterID), Generation: 1}, vt)
	require.True(t, cr.GetJwtExpiresAt().AsTime().After(time.Now()))
	a := &heartbeatingAgent{id: id.String(), cancel: cancel, closed: make(chan *agentv1.Close, 1), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		defer cancel()
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if c := m.GetClose(); c != nil {
				a.closed <- c
				return
			}
		}
	}()
	go func() {
		tick := time.NewTicker(timing.HeartbeatInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{SentAt: timestamppb.Now()}}}) != nil {
				return
			}
		}
	}()
	return a
}

// connectFleet connects n new agents of the fixture's cluster to r and waits until Postgres
// has them connected there.
func connectFleet(t *testing.T, f *fixture, r *apitest.Replica, n int) []*heartbeatingAgent {
	t.Helper()
	ids := f.env.DB.InsertNamedPendingAgents(t, uuid.MustParse(f.clusterID), "idle-"+uuid.NewString()[:8]+"-", n)
	out := make([]*heartbeatingAgent, n)
	for i, id := range ids {
		out[i] = connectHeartbeating(t, f, r.Addr, id)
	}
	for _, a := range out {
		waitStatus(t, f.env, a.id, models.AgentConnected, 10*time.Second)
		require.Equal(t, r.Gateway.ReplicaID().String(), f.env.DB.AgentReplica(t, a.id), "the row names the replica holding the stream")
	}
	return out
}

func rowVersions(t *testing.T, env *apitest.Env, agents []*heartbeatingAgent) map[string]string {
	t.Helper()
	out := make(map[string]string, len(agents))
	for _, a := range agents {
		out[a.id] = env.DB.AgentRowVersion(t, a.id)
	}
	return out
}

func timeField(t *testing.T, m map[string]any, key string) time.Time {
	t.Helper()
	s, ok := m[key].(string)
	require.True(t, ok, "%s is %v", key, m[key])
	at, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return at
}

// Idle agents cost Postgres their replica's lease only: heartbeats for several times the old
// rewrite period (two thirds of the missed-heartbeat limit) leave every agent row as it was,
// while what the API shows as their last heartbeat keeps up with the lease.
func TestIdleAgentsWriteOnlyTheLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.env.Replica
	fleet := connectFleet(t, f, r, 20)
	time.Sleep(timing.HeartbeatInterval + timing.FlushInterval) // every agent has heartbeated
	before := rowVersions(t, f.env, fleet)
	lease, found := f.env.DB.Lease(t, r.Gateway.ReplicaID())
	require.True(t, found)
	shownAgent := timeField(t, f.ops.Get("/v1/operator/agents/"+fleet[0].id).Map(), "last_heartbeat_at")
	shownCluster := timeField(t, f.ops.Get("/v1/operator/clusters/"+f.clusterID).Map(), "last_heartbeat_at")

	time.Sleep(4 * timing.HeartbeatInterval)
	require.Equal(t, before, rowVersions(t, f.env, fleet), "a heartbeat that changes nothing writes no agent row")
	for _, a := range fleet {
		require.Equal(t, models.AgentConnected, agentStatus(t, f.env, a.id))
	}
	renewed, found := f.env.DB.Lease(t, r.Gateway.ReplicaID())
	require.True(t, found)
	require.True(t, renewed.AliveAt.After(lease.AliveAt), "the lease is renewed")
	require.Equal(t, lease.StartedAt, renewed.StartedAt)

	// The API's last heartbeat of a connected agent, and of its cluster, is its replica's lease.
	ag := f.ops.Get("/v1/operator/agents/" + fleet[0].id)
	require.Equal(t, http.StatusOK, ag.Status)
	nowAgent := timeField(t, ag.Map(), "last_heartbeat_at")
	require.True(t, nowAgent.After(shownAgent.Add(2*timing.HeartbeatInterval)), "agent: %s then %s", shownAgent, nowAgent)
	require.WithinDuration(t, time.Now(), nowAgent, 2*time.Second)
	nowCluster := timeField(t, f.ops.Get("/v1/operator/clusters/"+f.clusterID).Map(), "last_heartbeat_at")
	require.True(t, nowCluster.After(shownCluster.Add(2*timing.HeartbeatInterval)), "cluster: %s then %s", shownCluster, nowCluster)
	list := f.ops.Get("/v1/operator/agents?cluster_id=" + f.clusterID)
	require.Equal(t, http.StatusOK, list.Status)
	for _, it := range list.Map()["items"].([]any) {
		require.WithinDuration(t, time.Now(), timeField(t, it.(map[string]any), "last_heartbeat_at"), 2*time.Second)
	}
	// The sync state judges them live.
	detail := f.ops.Get("/v1/operator/clusters/" + f.clusterID).Map()
	require.Len(t, detail["sync_agents"], len(fleet))
	for _, it := range detail["sync_agents"].([]any) {
		require.Equal(t, true, it.(map[string]any)["live"], "%v", it)
	}

	// A stopped agent is released with the last time its stream heard from it.
	fleet[0].cancel()
	stoppedAt := time.Now()
	waitStatus(t, f.env, fleet[0].id, models.AgentDisconnected, 10*time.Second)
	require.Empty(t, f.env.DB.AgentReplica(t, fleet[0].id))
	last := timeField(t, f.ops.Get("/v1/operator/agents/"+fleet[0].id).Map(), "last_heartbeat_at")
	require.False(t, last.After(stoppedAt), "last heartbeat %s after the agent stopped at %s", last, stoppedAt)
	require.WithinDuration(t, stoppedAt, last, timing.HeartbeatInterval+time.Second)
}

// A replica that dies without a word (its database gone first, so it releases nothing) leaves
// its agents connected in Postgres until its lease is older than the limit; then a live
// replica's sweeper marks them disconnected. The live replica's own agents are never touched.
func TestCrashedReplicaAgentsSweptByTheLiveOne(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.env.Replica
	b := f.env.StartCrashableReplica(t, "127.0.0.1:0")
	live := connectFleet(t, f, a, 3)
	doomed := connectFleet(t, f, b, 3)
	time.Sleep(timing.HeartbeatInterval + timing.FlushInterval)
	liveRows := rowVersions(t, f.env, live)
	leaseB, found := f.env.DB.Lease(t, b.Gateway.ReplicaID())
	require.True(t, found)

	b.Crash()
	crashed := time.Now()
	for _, ag := range doomed {
		require.Equal(t, models.AgentConnected, agentStatus(t, f.env, ag.id), "a crashed replica writes nothing")
	}
	for _, ag := range doomed {
		waitStatus(t, f.env, ag.id, models.AgentDisconnected, 20*time.Second)
	}
	limit := time.Duration(timing.MissedHeartbeats)*timing.HeartbeatInterval + 3*timing.FlushInterval
	require.GreaterOrEqual(t, time.Since(crashed), limit-timing.FlushInterval, "not before the lease expired")
	for _, ag := range doomed {
		// The sweep writes the agent's event with its status.
		require.Contains(t, f.env.DB.LastDisconnectMessage(t, ag.id), "lease expired")
		require.Empty(t, f.env.DB.AgentReplica(t, ag.id))
		// Its last heartbeat is the last time its replica vouched for it, not later.
		last := timeField(t, f.ops.Get("/v1/operator/agents/"+ag.id).Map(), "last_heartbeat_at")
		require.False(t, last.After(crashed), "last heartbeat %s after the crash at %s", last, crashed)
		require.False(t, last.Before(leaseB.AliveAt.Add(-time.Millisecond)), "last heartbeat %s before the lease seen at %s", last, leaseB.AliveAt)
	}
	require.Eventually(t, func() bool { return f.env.DB.CountLeases(t) == 1 }, 10*time.Second, 100*time.Millisecond,
		"the dead replica's lease is removed once it holds no agent")

	// Meanwhile the live replica's agents were neither marked nor written.
	require.Equal(t, liveRows, rowVersions(t, f.env, live))
	for _, ag := range live {
		require.Equal(t, models.AgentConnected, agentStatus(t, f.env, ag.id))
	}
	r := f.ops.Get("/v1/operator/clusters/" + f.clusterID)
	require.Equal(t, "active", r.Map()["status"])
	require.EqualValues(t, 3, r.Map()["connected_agents"])
}

// A second stream of an agent on another replica (a copy of the agent sharing its identity)
// claims the row; the first replica finds out without any heartbeat being written and closes
// its stream as superseded.
func TestStreamSupersededOnAnotherReplica(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := f.env.StartReplica(t, "127.0.0.1:0")
	first := connectFleet(t, f, f.env.Replica, 1)[0]
	second := connectHeartbeating(t, f, b.Addr, uuid.MustParse(first.id))
	require.Eventually(t, func() bool { return f.env.DB.AgentReplica(t, first.id) == b.Gateway.ReplicaID().String() }, 10*time.Second, 50*time.Millisecond)
	select {
	case c := <-first.closed:
		require.Equal(t, agentv1.CloseReason_CLOSE_REASON_SUPERSEDED, c.GetReason())
	case <-time.After(10 * time.Second):
		t.Fatal("the superseded stream was not closed")
	}
	time.Sleep(timing.FlushInterval)
	require.Equal(t, models.AgentConnected, agentStatus(t, f.env, first.id), "the old stream's end does not release the new one's row")
	require.Equal(t, b.Gateway.ReplicaID().String(), f.env.DB.AgentReplica(t, first.id))
	select {
	case <-second.done:
		t.Fatal("the current stream ended")
	default:
	}
}
