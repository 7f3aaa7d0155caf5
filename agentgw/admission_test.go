package agentgw_test

import (
	"testing"
	"time"

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
