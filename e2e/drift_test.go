package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/syncstate"
	"github.com/imprun/imprun-server/testharness"
)

// clusterSync reads GET /v1/operator/clusters/{id}/sync.
func (s *stack) clusterSync(t testing.TB) syncstate.ClusterSync {
	t.Helper()
	r := s.ops.Get("/v1/operator/clusters/" + s.clusterID + "/sync")
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var cs syncstate.ClusterSync
	require.NoError(t, json.Unmarshal(r.Body, &cs))
	return cs
}

func agentState(cs syncstate.ClusterSync, name string) (syncstate.AgentSync, bool) {
	for _, a := range cs.Agents {
		if a.Name == name {
			return a, true
		}
	}
	return syncstate.AgentSync{}, false
}

// TestDriftRepair: a rendered nginx file edited by hand turns the agent drifted, and the
// control plane repairs it (policy repair) while the second agent of the cluster stays synced;
// a killed agent turns stale, never synced, and the cluster is visibly not healthy.
func TestDriftRepair(t *testing.T) {
	t.Parallel()
	be := newEchoBackend(t, "v1")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: be.endpoint()})
	dirA, dirB := t.TempDir(), t.TempDir()
	tok := created(t, s.ops, "/v1/operator/clusters/"+s.clusterID+"/registration-tokens", map[string]any{"max_uses": 2})["token"].(string)
	a := s.startGatewayAgentNamed(t, dirA, tok, fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t)), "agent-a")
	b := s.startGatewayAgentNamed(t, dirB, tok, fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t)), "agent-b")
	a.identity(t)
	b.identity(t)
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)

	waitAgents := func(what string, ok func(a, b syncstate.AgentSync) bool) syncstate.ClusterSync {
		t.Helper()
		var cs syncstate.ClusterSync
		require.Eventually(t, func() bool {
			cs = s.clusterSync(t)
			sa, okA := agentState(cs, "agent-a")
			sb, okB := agentState(cs, "agent-b")
			return okA && okB && ok(sa, sb)
		}, 30*time.Second, 100*time.Millisecond, "%s: %+v", what, cs)
		return cs
	}
	cs := waitAgents("both synced", func(a, b syncstate.AgentSync) bool { return a.State == syncstate.Synced && b.State == syncstate.Synced })
	require.True(t, cs.Healthy)

	// Hand-edit agent a's rendered file: reported as drift, repaired, synced again; b never moves.
	conf := filepath.Join(dirA, "nginx", "current", "sites", pub, "publish.conf")
	orig, err := os.ReadFile(conf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(conf, append(append([]byte{}, orig...), []byte("\n# edited by hand\n")...), 0o644))
	var sawRepair bool
	require.Eventually(t, func() bool {
		cs := s.clusterSync(t)
		sb, _ := agentState(cs, "agent-b")
		require.Equal(t, syncstate.Synced, sb.State, "the second agent stays synced throughout")
		d := s.detail(t, pub)
		sawRepair = d.has(models.PublishEventRepair)
		got, _ := os.ReadFile(conf)
		sa, _ := agentState(cs, "agent-a")
		return sawRepair && sa.State == syncstate.Synced && string(got) == string(orig)
	}, 40*time.Second, 200*time.Millisecond, "the hand edit was never repaired")
	r := s.ops.Get("/v1/operator/audit-logs?action=agent.drift_repair")
	if r.Status == http.StatusOK {
		require.Contains(t, string(r.Body), "drift-repair")
	}

	// Kill agent a (and its nginx): stale, never synced; the cluster is not healthy.
	a.stop()
	stopNginx(t, dirA)
	cs = waitAgents("a stale", func(a, b syncstate.AgentSync) bool { return a.State == syncstate.Stale && b.State == syncstate.Synced })
	require.False(t, cs.Healthy)
	require.Equal(t, 1, cs.Counts.Stale)
	for _, p := range cs.Agents[0].Publishes {
		if cs.Agents[0].Name == "agent-a" {
			require.Equal(t, syncstate.Stale, p.State)
		}
	}
	rl := s.ops.Get("/v1/operator/clusters")
	require.Equal(t, http.StatusOK, rl.Status, string(rl.Body))
	require.Contains(t, string(rl.Body), `"healthy":false`)
}
