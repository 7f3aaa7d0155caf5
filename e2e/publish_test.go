package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/testharness"
	"github.com/imprun/imprun-server/workflows"
)

func TestPublishWithAgentOnline(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	ra := s.startAgent(t, t.TempDir(), s.token(t))
	id := ra.identity(t)

	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))
	pid := pub["id"].(string)
	require.Equal(t, "publish/"+pid+"/1", pub["workflow_id"], "the workflow started in the same request")
	d := s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)
	require.Equal(t, 1, d.CurrentRevision)
	require.Len(t, d.Revisions, 1)
	require.Len(t, d.Results, 1)
	require.Equal(t, id.AgentID, d.Results[0].AgentID)
	require.Equal(t, "succeeded", d.Results[0].Status)
	require.Equal(t, d.Revisions[0].Checksum, d.Results[0].Checksum, "the agent applied exactly the frozen snapshot")
	for _, ev := range []string{"created", "publish_requested", "revision_frozen", "command_queued", "command_delivered", "agent_result", "published"} {
		require.True(t, d.has(ev), "timeline has %s: %+v", ev, d.Timeline)
	}
	// The row is inserted claimed, both events in one statement: created still comes first.
	require.Equal(t, "created", d.Timeline[0].Type, "%+v", d.Timeline)
	require.Equal(t, "publish_requested", d.Timeline[1].Type, "%+v", d.Timeline)

	// The agent rendered the revision into its state directory.
	cur, err := os.ReadFile(filepath.Join(ra.dir, "publishes", pid, "current"))
	require.NoError(t, err)
	rendered, err := os.ReadFile(filepath.Join(ra.dir, "publishes", pid, strings.TrimSpace(string(cur))))
	require.NoError(t, err)
	require.Contains(t, string(rendered), "HTTPRoute")
	require.Contains(t, string(rendered), "payments.example.com")

	// Ops find the run in the Temporal Web UI / CLI by its search attributes.
	out := s.env.TemporalServer.RunCLI(t, "workflow", "list", "--query", "PublishId='"+pid+"' AND ClusterId='"+s.clusterID+"'")
	require.Contains(t, out, "publish/"+pid+"/1")

	// Another tenant's caller, and an agent of another cluster, get 404s.
	other := created(t, s.ops, "/v1/operator/clusters", map[string]any{"name": "other", "region": "us-east"})
	tok := created(t, s.ops, "/v1/operator/clusters/"+other["id"].(string)+"/registration-tokens", nil)["token"].(string)
	ra2 := s.startAgent(t, t.TempDir(), tok)
	id2 := ra2.identity(t)
	require.Equal(t, http.StatusNotFound, s.env.WithToken(id2.AgentJWT).Get("/v1/agent/publishes/"+pid+"/revisions/1").Status)
	require.Equal(t, http.StatusOK, s.env.WithToken(id.AgentJWT).Get("/v1/agent/publishes/"+pid+"/revisions/1").Status)
	require.Equal(t, http.StatusUnauthorized, s.owner.Get("/v1/agent/publishes/"+pid+"/revisions/1").Status)

	// Published revisions are in use: the catalog refuses to delete what they deploy.
	r := s.owner.Delete(prov + "/backends/" + s.backendID)
	require.Equal(t, http.StatusConflict, r.Status, string(r.Body))

	// Workflow decisions are audited with the workflow as the actor.
	require.EqualValues(t, 1, s.env.DB.CountWorkflowAudit(t, "product_publish.published", pid))
}

// The agents of a cluster are replicas: each answers the publish, each answer is one
// agent_result event on the timeline (the gateway writes a batch's events in one statement,
// still once each), and the run is decided by the first.
func TestEveryAgentOfAClusterOnTheTimeline(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	want := map[string]bool{}
	for range 3 {
		want[s.startAgent(t, t.TempDir(), s.token(t)).identity(t).AgentID] = true
	}
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)
	var d publishDetail
	require.Eventually(t, func() bool {
		d = s.detail(t, pid)
		return len(d.Results) == 3
	}, 30*time.Second, 100*time.Millisecond, "three results: %+v", d.Results)
	got := map[string]int{}
	require.Eventually(t, func() bool {
		d, got = s.detail(t, pid), map[string]int{}
		for _, e := range d.Timeline {
			if e.Type == models.PublishEventResult && e.AgentID != nil {
				got[*e.AgentID]++
			}
		}
		return len(got) == 3
	}, 30*time.Second, 100*time.Millisecond, "an agent_result event per agent: %+v", d.Timeline)
	for id, n := range got {
		require.True(t, want[id], "event of agent %s, which is not one of the cluster's", id)
		require.Equal(t, 1, n, "agent %s has one agent_result event", id)
	}
}

func TestPublishWhileAgentOfflineThenAgentStarts(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	dir := t.TempDir()
	ra := s.startAgent(t, dir, s.token(t))
	id := ra.identity(t)
	ra.stop() // registered, now offline
	s.waitAgent(t, id.AgentID, models.AgentDisconnected)

	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	var d publishDetail
	require.Eventually(t, func() bool {
		d = s.detail(t, pid)
		return d.Status == models.PublishDeploying && d.WaitState != nil && d.WaitState.Phase == "waiting_for_result" &&
			len(d.WaitState.Presence.Agents) == 1 && d.WaitState.Presence.Agents[0].Status != models.AgentConnected
	}, 30*time.Second, 100*time.Millisecond, "the run should say it waits for an agent: %+v", d.WaitState)
	require.Equal(t, s.clusterID, d.WaitState.ClusterID)
	require.Equal(t, "kr-prod-1", d.WaitState.Presence.ClusterName)
	require.NotNil(t, d.WaitState.Presence.Agents[0].OfflineSince, "offline since when")

	s.startAgent(t, dir, "")
	s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)

	// This run's history is what workflows/testdata/publish_v3_history.json replays; set
	// IMPRUN_RECORD_PUBLISH_HISTORY to a file to record it again after a deliberate change.
	if p := os.Getenv("IMPRUN_RECORD_PUBLISH_HISTORY"); p != "" {
		hist := s.env.TemporalServer.RunCLI(t, "workflow", "show", "--workflow-id", workflows.PublishWorkflowID(pid, 1), "--output", "json")
		require.NoError(t, os.WriteFile(p, []byte(hist), 0o644))
	}
}

// A worker process killed mid-deploy: another worker picks the run up and finishes it.
func TestWorkerKilledMidDeploy(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{noWorker: true})
	bin := testharness.GoBuild(t, "./cmd/worker")
	startWorker := func(name string) *testharness.Process {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"IMPRUN_DATABASE_URL="+s.env.DBURL,
			"IMPRUN_TEMPORAL_HOST_PORT="+s.env.TemporalServer.HostPort(),
			"IMPRUN_TEMPORAL_TASK_QUEUE="+s.env.TaskQueue,
			"IMPRUN_WORKER_HTTP_ADDR=127.0.0.1:0",
		)
		return testharness.StartProcess(t, name, cmd)
	}
	w1 := startWorker("worker-1")
	dir := t.TempDir()
	ra := s.startAgent(t, dir, s.token(t))
	ra.identity(t)
	ra.stop()

	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitDeploying(t, pid)
	w1.Kill() // no graceful shutdown: the run's worker is gone mid-wait
	startWorker("worker-2")
	s.startAgent(t, dir, "")
	s.waitStatus(t, pid, models.PublishPublished, 90*time.Second)
}

func (s *stack) waitAgent(t *testing.T, agentID, want string) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, _ := s.env.DB.AgentStatus(agentID)
		return st == want
	}, 20*time.Second, 50*time.Millisecond, "agent %s never %s", agentID, want)
}

func (s *stack) waitDeploying(t *testing.T, pid string) publishDetail {
	t.Helper()
	var d publishDetail
	require.Eventually(t, func() bool {
		d = s.detail(t, pid)
		return d.Status == models.PublishDeploying && d.WaitState != nil && d.WaitState.Phase == "waiting_for_result"
	}, 30*time.Second, 100*time.Millisecond, "never DEPLOYING and waiting: %s", d.Status)
	return d
}

// An agent that can't apply the revision reports failure: FAILED with its message; publishing
// again makes a new revision.
func TestAgentReportsFailure(t *testing.T) {
	t.Parallel()
	// nginx can't serve a TCP listener: the reference agent's renderer refuses it.
	s := newStack(t, stackOptions{gatewayClass: "nginx", listener: map[string]any{"name": "tcp", "port": 9000, "protocol": "TCP"}})
	ra := s.startAgent(t, t.TempDir(), s.token(t))
	ra.identity(t)
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	d := s.waitStatus(t, pid, models.PublishFailed, 60*time.Second)
	require.NotEmpty(t, d.StatusReason)
	require.Len(t, d.Results, 1)
	require.Equal(t, "failed", d.Results[0].Status)
	require.Equal(t, d.Results[0].Message, d.StatusReason, "FAILED with the agent's message")

	r := s.owner.Post(prov+"/product-publishes/"+pid+"/publish", nil)
	require.Equal(t, http.StatusAccepted, r.Status, string(r.Body))
	d = s.waitStatus(t, pid, models.PublishFailed, 60*time.Second)
	require.Equal(t, 2, d.CurrentRevision, "publishing again starts a new revision")
}

// Withdraw removes the files; rollback deploys an old revision's content as a new revision.
func TestWithdrawAndRollback(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	ra := s.startAgent(t, t.TempDir(), s.token(t))
	ra.identity(t)
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	d1 := s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)
	require.FileExists(t, filepath.Join(ra.dir, "publishes", pid, "rev-1.yaml"))

	r := s.owner.Post(prov+"/product-publishes/"+pid+"/withdraw", map[string]any{"reason": "maintenance window"})
	require.Equal(t, http.StatusAccepted, r.Status, string(r.Body))
	d := s.waitStatus(t, pid, models.PublishWithdrawn, 60*time.Second)
	require.True(t, d.has("withdrawn"))
	require.NoFileExists(t, filepath.Join(ra.dir, "publishes", pid, "rev-1.yaml"), "the agent removed the rendered files")

	// Illegal transitions are 409s that name the current status.
	r = s.owner.Post(prov+"/product-publishes/"+pid+"/withdraw", map[string]any{"reason": "again"})
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, models.PublishWithdrawn, r.Problem().CurrentStatus)
	r = s.owner.Patch(prov+"/product-publishes/"+pid, map[string]any{"hostname": "x.example.com"})
	require.Equal(t, http.StatusConflict, r.Status)

	// Change the catalog (allowed now that nothing live uses it) and publish revision 2.
	r = s.owner.Patch(prov+"/backends/"+s.backendID, map[string]any{"endpoints": []map[string]any{{"host": "payments-v2.internal", "port": 8080}}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, http.StatusAccepted, s.owner.Post(prov+"/product-publishes/"+pid+"/publish", nil).Status)
	d2 := s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)
	require.Equal(t, 2, d2.CurrentRevision)
	require.NotEqual(t, d1.Revisions[0].Checksum, d2.Revisions[0].Checksum)

	r = s.owner.Post(prov+"/product-publishes/"+pid+"/rollback", map[string]any{"revision": 1})
	require.Equal(t, http.StatusAccepted, r.Status, string(r.Body))
	d3 := s.waitStatus(t, pid, models.PublishPublished, 60*time.Second)
	require.Equal(t, 3, d3.CurrentRevision)
	require.Equal(t, 3, d3.Revisions[0].Revision)
	require.Equal(t, d1.Revisions[0].Checksum, d3.Revisions[0].Checksum, "rollback: a new revision with the old checksum")
	require.Equal(t, 1, *d3.Revisions[0].RollbackOf)
	r = s.owner.Post(prov+"/product-publishes/"+pid+"/rollback", map[string]any{"revision": 7})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
}

// Withdrawing while the deploy still waits for an agent cancels the deploy first.
func TestWithdrawCancelsDeploy(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	dir := t.TempDir()
	ra := s.startAgent(t, dir, s.token(t))
	ra.identity(t)
	ra.stop()
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitDeploying(t, pid)
	r := s.owner.Post(prov+"/product-publishes/"+pid+"/withdraw", map[string]any{"reason": "wrong cluster"})
	require.Equal(t, http.StatusAccepted, r.Status, string(r.Body))
	require.Eventually(t, func() bool { return s.detail(t, pid).has("deploy_cancelled") }, 30*time.Second, 100*time.Millisecond)
	s.startAgent(t, dir, "")
	d := s.waitStatus(t, pid, models.PublishWithdrawn, 60*time.Second)
	require.False(t, d.has("published"))
}

func TestDeadlineEndsInTimeout(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"deadline_seconds": 10}))["id"].(string)
	d := s.waitStatus(t, pid, models.PublishFailed, 60*time.Second)
	require.Equal(t, "timeout", d.StatusReason)
}

// Two publish requests racing for the same publish: one run, one revision.
func TestRacingPublishRequests(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"draft": true}))["id"].(string)
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = s.owner.Post(prov+"/product-publishes/"+pid+"/publish", nil).Status
		}()
	}
	wg.Wait()
	accepted := 0
	for _, c := range codes {
		if c == http.StatusAccepted {
			accepted++
		} else {
			require.Equal(t, http.StatusConflict, c)
		}
	}
	require.Equal(t, 1, accepted, "codes %v", codes)
	d := s.waitDeploying(t, pid)
	require.Equal(t, 1, d.CurrentRevision)
	require.Len(t, d.Revisions, 1)
}

// Validation of a publish request against the catalog and the clusters.
func TestPublishValidation(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.owner
	before := s.count(t, "product_publishes")
	b := s.publishBody(nil)
	delete(b, "cluster_id")
	r := c.Post(prov+"/product-publishes", b)
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "cluster_required", r.Problem().Code)

	for field, val := range map[string]any{
		"cluster_id": "00000000-0000-0000-0000-000000000001", "product_id": "00000000-0000-0000-0000-000000000001",
		"gateway_id": "00000000-0000-0000-0000-000000000001", "environment": "qa", "hostname": "Not A Host",
		"auth_mode": "basic", "visibility": "secret", "deadline_seconds": 1,
	} {
		r := c.Post(prov+"/product-publishes", s.publishBody(map[string]any{field: val}))
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s: %s", field, r.Body)
		require.Equal(t, field, r.Problem().Errors[0].Field, field)
	}
	r = c.Post(prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "oauth2", "auth_config": map[string]any{"issuer": "nope"}}))
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	r = c.Post(prov+"/product-publishes", s.publishBody(map[string]any{"api_services": []string{"00000000-0000-0000-0000-000000000002"}}))
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.Equal(t, "api_services[0]", r.Problem().Errors[0].Field)

	// A template whose class the cluster does not list.
	small := created(t, s.ops, "/v1/operator/clusters", map[string]any{"name": "nginx-only", "region": "x",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "nginx"}}}})["id"].(string)
	r = c.Post(prov+"/product-publishes", s.publishBody(map[string]any{"cluster_id": small}))
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.Equal(t, "gateway_id", r.Problem().Errors[0].Field)

	// A cluster in maintenance takes no new deploys.
	require.Equal(t, http.StatusOK, s.ops.Post("/v1/operator/clusters/"+s.clusterID+"/maintenance", map[string]any{"enabled": true}).Status)
	r = c.Post(prov+"/product-publishes", s.publishBody(nil))
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "cluster_in_maintenance", r.Problem().Code)

	// Another provider tenant can't see or use acme's product.
	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "provider", "owner_email": "boss@initech.test"})
	other := s.env.As(apitest.Persona{Email: "boss@initech.test"})
	r = other.Post(prov+"/product-publishes", s.publishBody(nil))
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.Equal(t, before, s.count(t, "product_publishes"), "nothing written")

	// Developers and viewers can't publish.
	created(t, s.owner, prov+"/members", map[string]any{"email": "dev@acme.test", "role": "developer"})
	r = s.env.As(apitest.Persona{Email: "dev@acme.test"}).Post(prov+"/product-publishes", s.publishBody(map[string]any{"draft": true}))
	require.Equal(t, http.StatusForbidden, r.Status)
}

func (s *stack) count(t *testing.T, table string) int64 {
	t.Helper()
	return int64(s.env.DB.Count(t, table))
}

// Drafts: PATCH and DELETE only while DRAFT.
func TestDraftEditDelete(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"draft": true}))["id"].(string)
	r := s.owner.Patch(prov+"/product-publishes/"+pid, map[string]any{"hostname": "pay.example.com", "visibility": "private"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "pay.example.com", r.Map()["hostname"])
	r = s.owner.Patch(prov+"/product-publishes/"+pid, map[string]any{"environment": "qa"})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.Equal(t, "pay.example.com", s.detail(t, pid).publishHostname(t, s, pid))
	require.Equal(t, http.StatusNoContent, s.owner.Delete(prov+"/product-publishes/"+pid).Status)
	require.Equal(t, http.StatusNotFound, s.owner.Get(prov+"/product-publishes/"+pid).Status)
}

func (d publishDetail) publishHostname(t *testing.T, s *stack, pid string) string {
	r := s.owner.Get(prov + "/product-publishes/" + pid)
	return r.Map()["hostname"].(string)
}

// TestKoreanFailureMessage: an agent's 3,000-byte Korean failure message goes through the whole
// path (result row, signal, status) cut on a character boundary, and the publish is FAILED with
// it, not stuck until its deadline.
func TestKoreanFailureMessage(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	sim, err := dialSimAgent(s.env.Replica.Addr, &agentv1.ConnectRequest{
		Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: s.token(t)}, AgentName: "korean"})
	require.NoError(t, err)
	t.Cleanup(sim.close)
	msg := strings.Repeat("배포에 실패했습니다: 업스트림 호스트를 찾을 수 없음. ", 60)
	require.Greater(t, len(msg), 3000)
	sim.deployFailure.Store(msg)
	pid := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	d := s.waitStatus(t, pid, models.PublishFailed, 60*time.Second)
	require.NotEqual(t, "timeout", d.StatusReason)
	require.True(t, utf8.ValidString(d.StatusReason))
	require.True(t, strings.HasPrefix(msg, d.StatusReason), "the reason is the agent's message, cut on a character boundary")
	require.Greater(t, len(d.StatusReason), 1000)
	require.Len(t, d.Results, 1)
	require.True(t, utf8.ValidString(d.Results[0].Message))
	require.True(t, strings.HasPrefix(msg, d.Results[0].Message))
}

// TestOrphanClaimsAreReleased: a publish claimed by a run that never started (or was
// terminated) is released by the reconciler: a DEPLOYING one becomes FAILED with the reason and
// a timeline event, and it can be published again instead of answering 409 forever.
func TestOrphanClaimsAreReleased(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	ra := s.startAgent(t, t.TempDir(), s.token(t))
	ra.identity(t)
	draft := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"draft": true}))["id"].(string)
	stuck := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"draft": true, "environment": "stage", "hostname": "stage.example.com"}))["id"].(string)
	// As if an api replica died between claiming and starting the run.
	s.env.DB.ClaimAsOrphan(t, draft, 1, "")
	s.env.DB.ClaimAsOrphan(t, stuck, 9, models.PublishDeploying)
	require.Equal(t, http.StatusConflict, s.owner.Post(prov+"/product-publishes/"+draft+"/publish", nil).Status, "claimed")

	d := s.waitStatus(t, stuck, models.PublishFailed, 30*time.Second)
	require.Contains(t, d.StatusReason, "never started")
	require.True(t, d.has(models.PublishEventOrphanReleased))
	require.Eventually(t, func() bool { return s.detail(t, draft).WorkflowID == nil }, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, models.PublishDraft, s.detail(t, draft).Status, "a claim whose run never began leaves the status alone")

	require.Equal(t, http.StatusAccepted, s.owner.Post(prov+"/product-publishes/"+draft+"/publish", nil).Status)
	s.waitStatus(t, draft, models.PublishPublished, 60*time.Second)
}
