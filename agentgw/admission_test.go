package agentgw_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// A connect storm beyond the gateway's bounds: with every connect slot taken, a connect waits
// in the queue while there is room and is served once a slot frees; one that finds the queue
// full is refused at once with Unavailable (the agent retries after its backoff), changes
// nothing and is counted.
func TestConnectsBeyondTheSlotsWaitAndBeyondTheQueueAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ra := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	ra.stop()
	waitStatus(t, f.env, id.AgentID, models.AgentDisconnected, 10*time.Second)

	gw := f.env.Replica.Gateway
	agentgw.SetAdmission(gw, 1, 1)
	release := agentgw.HoldConnectSlot(gw)
	req := &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RefreshSecret{RefreshSecret: id.RefreshSecret}, AgentId: id.AgentID}
	waiting := rawConnect(t, f.env.Replica.Addr, req)
	require.Eventually(t, func() bool { return agentgw.QueuedConnects(gw) == 1 }, 10*time.Second, 10*time.Millisecond)

	refused := rawConnect(t, f.env.Replica.Addr, req)
	_, err := refused.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "busy")
	require.Equal(t, 1.0, sessionsCounted(t, f.env, "refused", "busy"))
	require.Equal(t, models.AgentDisconnected, agentStatus(t, f.env, id.AgentID), "a refused connect changes nothing")

	release()
	resp, err := waiting.Recv()
	require.NoError(t, err)
	require.NotNil(t, resp.GetConnectResponse(), "the queued connect is served once a slot frees")
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	require.Zero(t, agentgw.QueuedConnects(gw))
}

// sessionsCounted is imprun_agentgw_sessions_total{event,reason} of env's replicas.
func sessionsCounted(t *testing.T, env *apitest.Env, event, reason string) float64 {
	t.Helper()
	mfs, err := env.Metrics.Gather()
	require.NoError(t, err)
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "imprun_agentgw_sessions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "event") == event && label(m, "reason") == reason {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Many JWT connects at once are all claimed, each exactly once, in groups the gateway counts
// (imprun_agentgw_connect_claim_group_size: its sum is the connects, its count the groups).
func TestConcurrentJWTConnectsAreClaimedOnceEach(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	gw := f.env.Replica.Gateway
	const n = 40
	ids := f.env.DB.InsertNamedPendingAgents(t, uuid.MustParse(f.clusterID), "burst-", n)
	streams := make([]agentv1.AgentService_ConnectClient, n)
	for i, id := range ids {
		jwt, _ := gw.Signer().Mint(id, uuid.MustParse(f.clusterID), 1)
		streams[i] = rawConnect(t, f.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: jwt}})
	}
	for i, s := range streams {
		msg, err := s.Recv()
		require.NoError(t, err, i)
		require.NotNil(t, msg.GetConnectResponse(), "got %v", msg)
	}
	for _, id := range ids {
		require.True(t, gw.ConnectedHere(id))
		require.Equal(t, 1, countOf(f.env.DB.AgentEventTypes(t, id.String()), models.EventConnected), "one claim of %s", id)
	}
	sum, count := claimGroupsObserved(t, f.env)
	require.Equal(t, float64(n), sum, "every connect is in exactly one group")
	require.GreaterOrEqual(t, count, uint64(1))
	require.LessOrEqual(t, count, uint64(n))
}

// claimGroupsObserved reads imprun_agentgw_connect_claim_group_size of env's replicas: the
// connects claimed and the groups they were claimed in.
func claimGroupsObserved(t testing.TB, env *apitest.Env) (sum float64, count uint64) {
	t.Helper()
	mfs, err := env.Metrics.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "imprun_agentgw_connect_claim_group_size" {
			for _, m := range mf.GetMetric() {
				sum += m.GetHistogram().GetSampleSum()
				count += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return sum, count
}
