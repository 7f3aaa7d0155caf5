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

	"github.com/imprun/imprun-server/http/apitest"
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
	// A loaded CI machine may delay one heartbeat past the usual 3 s limit; "stays synced
	// throughout" is about drift, so the limit here is generous (a killed agent still turns
	// stale, after 8 s).
	tm := *timing
	tm.MissedHeartbeats = 8
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: be.endpoint(), timing: &tm})
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
	admin := s.env.As(apitest.Persona{Email: "admin@example.com", Roles: []string{models.PlatformAdmin}})
	r := admin.Get("/v1/operator/audit-logs?action=agent.drift_repair")
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Contains(t, string(r.Body), `"actor_type":"system"`, "the repair is audited with actor system")

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

// TestWipedStateDirectoryRestored: an agent whose state directory is wiped (its identity kept,
// so it reconnects as itself and the outbox holds nothing it has not acknowledged) gets the
// cluster's whole desired set back: the publish is served and its customer's key works again.
func TestWipedStateDirectoryRestored(t *testing.T) {
	t.Parallel()
	be := newEchoBackend(t, "v1")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: be.endpoint()})
	dir, addr := t.TempDir(), fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	ga := s.startGatewayAgentNamed(t, dir, s.token(t), addr, "agent-a")
	ga.identity(t)
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "api-key"}))["id"].(string)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	plan := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Starter",
		"rate_limit": map[string]any{"requests": 100, "period": "minute"}})["id"].(string)
	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	customer := s.env.As(custP)
	app := created(t, customer, "/v1/customer/apps", map[string]any{"name": "shop"})["id"].(string)
	rs := customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app, "plan_id": plan})
	require.Equal(t, http.StatusCreated, rs.Status, string(rs.Body))
	apiKey := created(t, customer, "/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})["key"].(string)
	host := "payments.example.com"
	require.Eventually(t, func() bool { return callGateway(t, addr, host, "/charges", key(apiKey)).Status == http.StatusOK },
		30*time.Second, 50*time.Millisecond, "the key never worked")

	// Wipe everything but the identity, nginx included.
	ga.stop()
	stopNginx(t, dir)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != "identity.json" {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	_, err = tryGateway(addr, host, "/charges", key(apiKey))
	require.Error(t, err, "nothing serves while the agent is down")

	restarted := time.Now()
	s.startGatewayAgentNamed(t, dir, "", addr, "agent-a")
	require.Eventually(t, func() bool {
		r, err := tryGateway(addr, host, "/charges", key(apiKey))
		return err == nil && r.Status == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "the wiped agent never served the publish and the key again")
	t.Logf("publish and credential restored %s after the restart", time.Since(restarted).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		sa, ok := agentState(s.clusterSync(t), "agent-a")
		return ok && sa.State == syncstate.Synced
	}, 30*time.Second, 100*time.Millisecond)
}

// TestDriftReportOnly: with drift_policy report, a hand edit is shown as drifted and left
// alone: no repair command, no repair event, the edited file stays.
func TestDriftReportOnly(t *testing.T) {
	t.Parallel()
	be := newEchoBackend(t, "v1")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: be.endpoint()})
	r := s.ops.Patch("/v1/operator/clusters/"+s.clusterID, map[string]any{"drift_policy": "report"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	dir := t.TempDir()
	ga := s.startGatewayAgentNamed(t, dir, s.token(t), fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t)), "agent-a")
	ga.identity(t)
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	require.Eventually(t, func() bool {
		sa, ok := agentState(s.clusterSync(t), "agent-a")
		return ok && sa.State == syncstate.Synced
	}, 30*time.Second, 100*time.Millisecond)

	conf := filepath.Join(dir, "nginx", "current", "sites", pub, "publish.conf")
	orig, err := os.ReadFile(conf)
	require.NoError(t, err)
	edited := append(append([]byte{}, orig...), []byte("\n# edited by hand\n")...)
	require.NoError(t, os.WriteFile(conf, edited, 0o644))
	var cs syncstate.ClusterSync
	require.Eventually(t, func() bool {
		cs = s.clusterSync(t)
		sa, ok := agentState(cs, "agent-a")
		return ok && sa.State == syncstate.Drifted
	}, 30*time.Second, 100*time.Millisecond, "the hand edit was never reported: %+v", cs)
	require.False(t, cs.Healthy)
	// Several repair periods later: still drifted, never repaired.
	time.Sleep(3 * time.Second)
	sa, _ := agentState(s.clusterSync(t), "agent-a")
	require.Equal(t, syncstate.Drifted, sa.State)
	require.False(t, s.detail(t, pub).has(models.PublishEventRepair), "policy report never repairs")
	got, err := os.ReadFile(conf)
	require.NoError(t, err)
	require.Equal(t, string(edited), string(got))
}
