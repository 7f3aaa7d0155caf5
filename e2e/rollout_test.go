package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

type rolloutView struct {
	ID                string `json:"id"`
	Status            string `json:"status"`
	PauseReason       string `json:"pause_reason"`
	StatusReason      string `json:"status_reason"`
	Failures          int    `json:"failures"`
	FailureBudgetLeft int    `json:"failure_budget_left"`
	WorkflowID        string `json:"workflow_id"`
	Waiting           struct {
		For   string     `json:"for"`
		Wave  int        `json:"wave"`
		Until *time.Time `json:"until"`
	} `json:"waiting"`
	Complete struct {
		Status bool   `json:"status"`
		Reason string `json:"reason"`
	} `json:"complete"`
	Waves []struct {
		Gate     string `json:"gate"`
		Clusters []struct {
			ClusterID        string     `json:"cluster_id"`
			State            string     `json:"state"`
			PublishID        *string    `json:"publish_id"`
			Revision         int        `json:"revision"`
			PreviousRevision int        `json:"previous_revision"`
			Message          string     `json:"message"`
			StartedAt        *time.Time `json:"started_at"`
			DeadlineAt       *time.Time `json:"deadline_at"`
			FinishedAt       *time.Time `json:"finished_at"`
		} `json:"clusters"`
	} `json:"waves"`
}

func (v rolloutView) cluster(id string) (state string, rev, prev int, msg string) {
	for _, w := range v.Waves {
		for _, c := range w.Clusters {
			if c.ClusterID == id {
				return c.State, c.Revision, c.PreviousRevision, c.Message
			}
		}
	}
	return "", 0, 0, ""
}

func getRollout(t testing.TB, c *apitest.Client, id string) rolloutView {
	t.Helper()
	r := c.Get(prov + "/rollouts/" + id)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var v rolloutView
	require.NoError(t, json.Unmarshal(r.Body, &v))
	return v
}

func waitRollout(t testing.TB, c *apitest.Client, id string, within time.Duration, ok func(rolloutView) bool) rolloutView {
	t.Helper()
	var v rolloutView
	require.Eventually(t, func() bool { v = getRollout(t, c, id); return ok(v) }, within, 100*time.Millisecond, "rollout %s: last seen %+v", id, v)
	return v
}

// Five clusters: c1 and c2 run the reference agent and already serve revision 1; c3 has a
// simulated agent, c4 a simulated agent that fails every deploy, c5 no agent at all. The
// product changes, and a rollout takes it out: wave 1 (c1) -> soak -> the manual gate, approved
// through the Temporal CLI -> wave 2, where c4's failure spends the budget and pauses the
// rollout and c5 times out at its deadline -> abort rolls c1 and c2 back to revision 1 (their
// agents apply it again) and withdraws c3's new publish.
func TestRolloutWavesGateBudgetDeadlineAbort(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	caps := map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}
	cl := []string{s.clusterID}
	for i := 2; i <= 5; i++ {
		cl = append(cl, created(t, s.ops, "/v1/operator/clusters", map[string]any{"name": fmt.Sprintf("kr-prod-%d", i), "region": "kr-central", "capabilities": caps})["id"].(string))
	}
	tokenOf := func(cluster string) string {
		return created(t, s.ops, "/v1/operator/clusters/"+cluster+"/registration-tokens", map[string]any{"max_uses": 2})["token"].(string)
	}
	a1 := s.startAgent(t, t.TempDir(), tokenOf(cl[0]))
	a1.identity(t)
	a2 := s.startAgent(t, t.TempDir(), tokenOf(cl[1]))
	a2.identity(t)
	sim := func(cluster string) *simAgent {
		a, err := dialSimAgent(s.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: tokenOf(cluster)}, AgentName: "sim"})
		require.NoError(t, err)
		t.Cleanup(a.close)
		return a
	}
	sim(cl[2])
	sim(cl[3]).deployFailure.Store("nginx: [emerg] simulated failure")

	// Revision 1 on c1 and c2, by hand.
	var rev1 []string
	for _, c := range cl[:2] {
		pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"cluster_id": c}))["id"].(string)
		d := s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)
		rev1 = append(rev1, d.Revisions[0].Checksum)
	}
	created(t, s.owner, prov+"/api-services/"+s.serviceID+"/routes", map[string]any{"name": "refunds",
		"paths": []map[string]any{{"type": "prefix", "value": "/refunds"}}, "backend_refs": []map[string]any{{"backend_id": s.backendID, "weight": 100}}})

	body := map[string]any{"product_id": s.productID, "gateway_id": s.gatewayID, "environment": "prod", "hostname": "payments.example.com",
		"targets": map[string]any{"cluster_ids": cl},
		"strategy": map[string]any{"waves": []map[string]any{{"clusters": cl[:1]}, {"clusters": cl[1:], "gate": "manual", "max_concurrency": 4}},
			"min_success_time_seconds": 2, "progress_deadline_seconds": 15}}

	// Bad input is a clear 4xx and starts nothing.
	before := s.env.DB.Count(t, "rollouts")
	bad := s.owner.Post(prov+"/rollouts", map[string]any{"product_id": s.productID, "gateway_id": s.gatewayID, "environment": "prod",
		"hostname": "payments.example.com", "targets": map[string]any{"cluster_ids": cl}, "strategy": map[string]any{"max_failures": "200%"}})
	require.True(t, bad.Status >= 400 && bad.Status < 500, string(bad.Body))
	require.Equal(t, http.StatusOK, s.ops.Post("/v1/operator/clusters/"+cl[4]+"/maintenance", map[string]any{"enabled": true}).Status)
	r := s.owner.Post(prov+"/rollouts", body)
	require.Equal(t, http.StatusConflict, r.Status, string(r.Body))
	require.Equal(t, "cluster_in_maintenance", r.Problem().Code)
	require.Equal(t, http.StatusOK, s.ops.Post("/v1/operator/clusters/"+cl[4]+"/maintenance", map[string]any{"enabled": false}).Status)
	require.Equal(t, before, s.env.DB.Count(t, "rollouts"))

	ro := created(t, s.owner, prov+"/rollouts", body)
	id := ro["id"].(string)
	require.Equal(t, "rollout/"+id, ro["workflow_id"])

	v := waitRollout(t, s.owner, id, 60*time.Second, func(v rolloutView) bool { return v.Waiting.For == "soak" || v.PauseReason == models.PauseGate })
	if v.Waiting.For == "soak" {
		require.NotNil(t, v.Waiting.Until)
	}
	v = waitRollout(t, s.owner, id, 30*time.Second, func(v rolloutView) bool { return v.PauseReason == models.PauseGate })
	require.Equal(t, models.RolloutPaused, v.Status)
	require.Equal(t, "paused_gate", v.Complete.Reason)
	st, rev, prev, _ := v.cluster(cl[0])
	require.Equal(t, models.RolloutClusterSucceeded, st)
	require.Equal(t, 2, rev)
	require.Equal(t, 1, prev)
	st, _, _, _ = v.cluster(cl[1])
	require.Equal(t, models.RolloutClusterPending, st, "wave 2 waits at its gate")

	out := s.env.TemporalServer.RunCLI(t, "workflow", "list", "--query", "RolloutId='"+id+"'")
	require.Contains(t, out, "rollout/"+id)
	s.env.TemporalServer.RunCLI(t, "workflow", "signal", "--workflow-id", "rollout/"+id, "--name", "approve",
		"--input", `{"actor":"ops@example.com","reason":"canary healthy"}`)

	v = waitRollout(t, s.owner, id, 60*time.Second, func(v rolloutView) bool {
		st, _, _, _ := v.cluster(cl[4])
		return v.PauseReason == models.PauseFailureBudget && st == models.RolloutClusterTimedOut
	})
	require.Equal(t, 0, v.FailureBudgetLeft)
	st, _, _, msg := v.cluster(cl[3])
	require.Equal(t, models.RolloutClusterFailed, st, msg)
	for _, c := range cl[1:3] {
		st, rev, _, _ := v.cluster(c)
		require.Equal(t, models.RolloutClusterSucceeded, st)
		require.Greater(t, rev, 0)
	}
	require.Contains(t, s.env.DB.AuditActorsAndSources(t, "rollout.approve"), [2]string{"ops@example.com", "temporal-cli"})

	// Approving again is refused (no gate), abort without a reason too.
	require.Equal(t, http.StatusConflict, s.owner.Post(prov+"/rollouts/"+id+"/approve", nil).Status)
	bad = s.owner.Post(prov+"/rollouts/"+id+"/abort", map[string]any{})
	require.True(t, bad.Status >= 400 && bad.Status < 500, string(bad.Body))
	r = s.owner.Post(prov+"/rollouts/"+id+"/abort", map[string]any{"reason": "refunds route breaks clients"})
	require.Equal(t, http.StatusAccepted, r.Status, string(r.Body))

	v = waitRollout(t, s.owner, id, 90*time.Second, func(v rolloutView) bool { return v.Status == models.RolloutAborted })
	require.True(t, v.Complete.Status)
	for i, c := range cl[:2] {
		st, rev, prev, msg := v.cluster(c)
		require.Equal(t, models.RolloutClusterRolledBack, st, msg)
		require.Equal(t, 3, rev, "the rollback is a new revision")
		require.Equal(t, 1, prev)
		pid := s.publishOn(t, c)
		d := s.detail(t, pid)
		require.Equal(t, models.PublishPublished, d.Status)
		last := d.Results[len(d.Results)-1]
		require.Equal(t, 3, last.Revision)
		require.Equal(t, rev1[i], last.Checksum, "the agent applied revision 1's content again")
	}
	st, _, _, msg = v.cluster(cl[2])
	require.Equal(t, models.RolloutClusterRolledBack, st, msg)
	require.Equal(t, models.PublishWithdrawn, s.detail(t, s.publishOn(t, cl[2])).Status, "a cluster that served nothing before is withdrawn")
	require.Contains(t, s.env.DB.AuditActorsAndSources(t, "rollout.abort"), [2]string{ownerP.Email, "rest"})

	// This run's history is what workflows/testdata/rollout_history.json replays; set
	// IMPRUN_RECORD_ROLLOUT_HISTORY to a file to record it again after a deliberate change.
	if p := os.Getenv("IMPRUN_RECORD_ROLLOUT_HISTORY"); p != "" {
		hist := s.env.TemporalServer.RunCLI(t, "workflow", "show", "--workflow-id", "rollout/"+id, "--output", "json")
		require.NoError(t, os.WriteFile(p, []byte(hist), 0o644))
	}
}

// publishOn is the id of the product's publish on a cluster.
func (s *stack) publishOn(t testing.TB, cluster string) string {
	t.Helper()
	r := s.owner.Get(prov + "/product-publishes?cluster_id=" + cluster + "&product_id=" + s.productID)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	items := r.Map()["items"].([]any)
	require.NotEmpty(t, items)
	return items[0].(map[string]any)["id"].(string)
}
