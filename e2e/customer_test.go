package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

var custP = apitest.Persona{Email: "dev@globex.test"}

// market is a stack with the product published on two clusters (A and B, one agent each), a
// customer tenant with an app.
type market struct {
	*stack
	customer     *apitest.Client
	appID        string
	pubA, pubB   string
	clusterB     string
	agentA       *runningAgent
	agentB       *runningAgent
	dirB, tokenB string
}

func newMarket(t testing.TB, approval bool, deadline time.Duration) *market {
	t.Helper()
	s := newStackWith(t, stackOptions{}, apitest.Options{ApprovalDeadline: deadline})
	m := &market{stack: s}
	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	m.customer = s.env.As(custP)
	m.appID = created(t, m.customer, "/v1/customer/apps", map[string]any{"name": "shop", "description": "web shop"})["id"].(string)

	m.clusterB = created(t, s.ops, "/v1/operator/clusters", map[string]any{"name": "us-prod-1", "region": "us-east",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}})["id"].(string)
	m.tokenB = created(t, s.ops, "/v1/operator/clusters/"+m.clusterB+"/registration-tokens", map[string]any{"max_uses": 5})["token"].(string)
	m.agentA = s.startAgent(t, t.TempDir(), s.token(t))
	m.dirB = t.TempDir()
	m.agentB = s.startAgent(t, m.dirB, m.tokenB)
	m.agentA.identity(t)
	m.agentB.identity(t)

	body := map[string]any{"approval_required": approval}
	m.pubA = created(t, s.owner, prov+"/product-publishes", s.publishBody(body))["id"].(string)
	body["cluster_id"], body["hostname"] = m.clusterB, "payments.us.example.com"
	m.pubB = created(t, s.owner, prov+"/product-publishes", s.publishBody(body))["id"].(string)
	s.waitStatus(t, m.pubA, models.PublishPublished, 60*time.Second)
	s.waitStatus(t, m.pubB, models.PublishPublished, 60*time.Second)
	return m
}

type subscription struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func (m *market) subscribe(t testing.TB, pub string) subscription {
	t.Helper()
	var sub subscription
	r := m.customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": m.appID})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	r.JSON(&sub)
	return sub
}

func (m *market) subStatus(t testing.TB, id string) string {
	t.Helper()
	r := m.customer.Get("/v1/customer/subscriptions/" + id)
	require.Equal(t, http.StatusOK, r.Status)
	return r.Map()["status"].(string)
}

func (m *market) waitSub(t testing.TB, id, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return m.subStatus(t, id) == want }, 30*time.Second, 100*time.Millisecond, "subscription never %s", want)
}

type rollout struct {
	ClusterID     string `json:"cluster_id"`
	Action        string `json:"action"`
	Status        string `json:"status"`
	Version       int64  `json:"version"`
	AgentsOffline bool   `json:"agents_offline"`
}

type credentialDetail struct {
	Status              string    `json:"status"`
	Version             int64     `json:"version"`
	Rollout             []rollout `json:"rollout"`
	RevocationConfirmed bool      `json:"revocation_confirmed"`
}

func (m *market) credential(t testing.TB, id string) credentialDetail {
	t.Helper()
	r := m.customer.Get("/v1/customer/credentials/" + id)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var d credentialDetail
	r.JSON(&d)
	return d
}

func (m *market) waitRollout(t testing.TB, id string, check func(d credentialDetail) bool, msg string) credentialDetail {
	t.Helper()
	var d credentialDetail
	defer func() {
		if t.Failed() {
			t.Logf("last credential state: %+v", d)
			for _, l := range strings.Split(m.env.Logs(), "\n") {
				if strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") {
					t.Log(l)
				}
			}
			for _, c := range m.env.DB.CredentialDeliveries() {
				if c.Status != nil && c.Result != nil {
					t.Logf("command %s %s delivery=%s result=%s", c.Kind, c.ClusterID, *c.Status, *c.Result)
				}
			}
		}
	}()
	require.Eventually(t, func() bool { d = m.credential(t, id); return check(d) }, 60*time.Second, 100*time.Millisecond, msg)
	return d
}

func (m *market) debugSync(t testing.TB, id string, version int) {
	t.Log(m.env.TemporalServer.RunCLI(t, "workflow", "query", "--workflow-id", "credential-sync/"+id+"/"+strconv.Itoa(version), "--type", "status"))
}

func byCluster(d credentialDetail) map[string]rollout {
	out := map[string]rollout{}
	for _, r := range d.Rollout {
		out[r.ClusterID] = r
	}
	return out
}

func allConfirmed(d credentialDetail, action string, n int) bool {
	if len(d.Rollout) != n {
		return false
	}
	for _, r := range d.Rollout {
		if r.Status != models.RolloutConfirmed || r.Action != action || r.Version != d.Version {
			return false
		}
	}
	return true
}

func TestAutoApprovedSubscriptionAndCredentialRollout(t *testing.T) {
	t.Parallel()
	m := newMarket(t, false, 0)
	subA := m.subscribe(t, m.pubA)
	require.Equal(t, models.SubscriptionActive, subA.Status, "active at once")
	subB := m.subscribe(t, m.pubB)
	require.Equal(t, models.SubscriptionActive, subB.Status)

	r := m.customer.WithHeader("Idempotency-Key", "first-key").Post("/v1/customer/apps/"+m.appID+"/credentials", map[string]any{"type": "api_key", "label": "prod"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	created := r.Map()
	credID, key := created["id"].(string), created["key"].(string)
	require.True(t, strings.HasPrefix(key, "imp_"))
	_, secret, _ := strings.Cut(key, ".")

	// Both clusters' agents acknowledge; the detail shows both confirmed.
	m.waitRollout(t, credID, func(d credentialDetail) bool { return allConfirmed(d, models.RolloutUpsert, 2) }, "credential never confirmed on both clusters")

	// The agent can answer locally whether the key is valid for the publish.
	for _, ra := range []*runningAgent{m.agentA, m.agentB} {
		b, err := os.ReadFile(filepath.Join(ra.dir, "credentials.json"))
		require.NoError(t, err)
		require.Contains(t, string(b), credID)
	}
	require.NotContains(t, string(m.customer.Get("/v1/customer/apps/"+m.appID+"/credentials").Body), secret, "lists never show the secret")

	// Suspending the subscription on cluster A revokes the key there only.
	r = m.owner.Post("/v1/provider/subscriptions/"+subA.ID+"/suspend", map[string]any{"reason": "unpaid"})
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, r.Status, string(r.Body))
	m.waitSub(t, subA.ID, models.SubscriptionSuspended)
	d := m.waitRollout(t, credID, func(d credentialDetail) bool {
		rs := byCluster(d)
		a, b := rs[m.clusterID], rs[m.clusterB]
		return d.Version >= 2 && a.Action == models.RolloutRevoke && a.Status == models.RolloutConfirmed && a.Version == d.Version &&
			b.Action == models.RolloutUpsert && b.Status == models.RolloutConfirmed && b.Version == d.Version
	}, "suspension should revoke on cluster A only")
	require.Equal(t, models.CredentialActive, d.Status)

	// Revoke while cluster B's agent is offline: B stays pending, named, until it reconnects.
	m.agentB.stop()
	require.Eventually(t, func() bool {
		st, _ := m.env.DB.ClusterAgentStatus(m.clusterB)
		return st == models.AgentDisconnected
	}, 15*time.Second, 100*time.Millisecond)
	r = m.customer.Post("/v1/customer/credentials/"+credID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	d = m.waitRollout(t, credID, func(d credentialDetail) bool {
		rs := byCluster(d)
		return rs[m.clusterID].Status == models.RolloutConfirmed && rs[m.clusterID].Version == d.Version && rs[m.clusterB].Status == models.RolloutPending
	}, "cluster A confirms, B pends")
	require.True(t, byCluster(d)[m.clusterB].AgentsOffline, "the pending cluster's agents are offline")
	require.False(t, d.RevocationConfirmed, "a revocation counts only when every cluster confirmed")
	m.agentB = m.startAgent(t, m.dirB, "")
	d = m.waitRollout(t, credID, func(d credentialDetail) bool { return allConfirmed(d, models.RolloutRevoke, 2) }, "revocation never confirmed everywhere")
	require.True(t, d.RevocationConfirmed)

	// The secret is nowhere: logs, workflow histories, audit log, outbox, agent state.
	m.assertSecretNowhere(t, secret)
}

func (m *market) assertSecretNowhere(t testing.TB, secret string) {
	t.Helper()
	require.Contains(t, m.env.Logs(), "component=agent", "the agents log into the same buffer")
	require.NotContains(t, m.env.Logs(), secret, "api, gateway, worker and agent logs")
	for place, all := range m.env.DB.StoredText(t) {
		require.NotContains(t, all, secret, place)
	}
	out := m.env.TemporalServer.RunCLI(t, "workflow", "list", "--query", "TenantId != ''", "--output", "json")
	var runs []struct {
		Execution struct {
			WorkflowID string `json:"workflowId"`
		} `json:"execution"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &runs))
	require.NotEmpty(t, runs)
	for _, run := range runs {
		hist := m.env.TemporalServer.RunCLI(t, "workflow", "show", "--workflow-id", run.Execution.WorkflowID, "--output", "json")
		require.NotContains(t, hist, secret, "history of %s", run.Execution.WorkflowID)
	}
	for _, ra := range []*runningAgent{m.agentA, m.agentB} {
		_ = filepath.Walk(ra.dir, func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(path)
			require.NotContains(t, string(b), secret, "agent file %s", path)
			return nil
		})
	}
}

func TestManualApprovalRESTAndCLI(t *testing.T) {
	t.Parallel()
	m := newMarket(t, true, 0)
	sub := m.subscribe(t, m.pubA)
	require.Equal(t, models.SubscriptionPending, sub.Status)

	// Approving something not pending is refused; the customer can't approve at all.
	require.Equal(t, http.StatusForbidden, m.customer.Post("/v1/provider/subscriptions/"+sub.ID+"/approve", nil).Status)
	r := m.owner.Post("/v1/provider/subscriptions/"+sub.ID+"/resume", nil)
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, models.SubscriptionPending, r.Problem().CurrentStatus)

	r = m.owner.Post("/v1/provider/subscriptions/"+sub.ID+"/approve", map[string]any{"reason": "looks fine"})
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, r.Status, string(r.Body))
	m.waitSub(t, sub.ID, models.SubscriptionActive)
	r = m.owner.Post("/v1/provider/subscriptions/"+sub.ID+"/approve", nil)
	require.Equal(t, http.StatusConflict, r.Status, "approving a subscription that is not pending")

	// The same decision through the Temporal CLI, as ops would make it.
	sub2 := m.subscribe(t, m.pubB)
	require.Equal(t, models.SubscriptionPending, sub2.Status)
	wid := "subscription/" + sub2.ID
	// A malformed payload is rejected and logged; nothing changes.
	m.env.TemporalServer.RunCLI(t, "workflow", "signal", "--workflow-id", wid, "--name", "approve", "--input", `{"who":"nobody"}`)
	require.Eventually(t, func() bool {
		n, _ := m.env.DB.CountAuditOn("subscription.signal_ignored", sub2.ID)
		return n == 1
	}, 20*time.Second, 100*time.Millisecond)
	require.Equal(t, models.SubscriptionPending, m.subStatus(t, sub2.ID))
	m.env.TemporalServer.RunCLI(t, "workflow", "signal", "--workflow-id", wid, "--name", "approve", "--input", `{"actor":"ops@example.com","reason":"approved from the CLI"}`)
	m.waitSub(t, sub2.ID, models.SubscriptionActive)

	// Both paths wrote the same kind of audit entry, with the deciding actor.
	got := m.env.DB.AuditActorsAndSources(t, "subscription.approve")
	require.Equal(t, [][2]string{{ownerP.Email, "rest"}, {"ops@example.com", "temporal-cli"}}, got)
}

func TestRejectionAndExpiry(t *testing.T) {
	t.Parallel()
	m := newMarket(t, true, 4*time.Second)
	sub := m.subscribe(t, m.pubA)
	r := m.owner.Post("/v1/provider/subscriptions/"+sub.ID+"/reject", map[string]any{})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, "a rejection needs a reason")
	r = m.owner.Post("/v1/provider/subscriptions/"+sub.ID+"/reject", map[string]any{"reason": "not a fit"})
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, r.Status)
	m.waitSub(t, sub.ID, models.SubscriptionRejected)

	late := m.subscribe(t, m.pubB)
	m.waitSub(t, late.ID, models.SubscriptionExpired) // nobody decided before the 4 s deadline

	// Bad subscriptions change nothing.
	before := m.env.DB.Count(t, "subscriptions")
	for name, body := range map[string]map[string]any{
		"unknown publish": {"product_publish_id": "00000000-0000-0000-0000-000000000001", "client_app_id": m.appID},
		"unknown app":     {"product_publish_id": m.pubA, "client_app_id": "00000000-0000-0000-0000-000000000001"},
		"foreign plan":    {"product_publish_id": m.pubA, "client_app_id": m.appID, "plan_id": "00000000-0000-0000-0000-000000000001"},
		"other env":       {"product_publish_id": m.pubA, "client_app_id": m.appID, "environment": "dev"},
	} {
		r := m.customer.Post("/v1/customer/subscriptions", body)
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, name)
	}
	// A withdrawn publish can't be subscribed to.
	require.Equal(t, http.StatusAccepted, m.owner.Post(prov+"/product-publishes/"+m.pubA+"/withdraw", map[string]any{"reason": "done"}).Status)
	m.waitStatus(t, m.pubA, models.PublishWithdrawn, 60*time.Second)
	r = m.customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": m.pubA, "client_app_id": m.appID})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.Equal(t, before, m.env.DB.Count(t, "subscriptions"))
}

// TestPlansAreNotOptional: a subscription to a product with one plan runs under it; with several
// it must name one (422 otherwise, nothing created), so limits always reach the gateway.
func TestPlansAreNotOptional(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	ra := s.startAgent(t, t.TempDir(), s.token(t))
	ra.identity(t)
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	basic := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Basic",
		"rate_limit": map[string]any{"requests": 10, "period": "minute"}})["id"].(string)
	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	customer := s.env.As(custP)
	app1 := created(t, customer, "/v1/customer/apps", map[string]any{"name": "one"})["id"].(string)
	app2 := created(t, customer, "/v1/customer/apps", map[string]any{"name": "two"})["id"].(string)

	sub := created(t, customer, "/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app1})
	require.Equal(t, basic, sub["plan_id"], "the product's only plan")

	pro := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Pro",
		"rate_limit": map[string]any{"requests": 100, "period": "minute"}})["id"].(string)
	r := customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app2})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, string(r.Body))
	require.Equal(t, "plan_id", r.Problem().Errors[0].Field)
	sub = created(t, customer, "/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app2, "plan_id": pro})
	require.Equal(t, pro, sub["plan_id"])

	// A marked default plan is what a subscription that names none gets; marking another one
	// unmarks it.
	created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Team", "is_default": true,
		"rate_limit": map[string]any{"requests": 50, "period": "minute"}})
	team2 := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Team Plus", "is_default": true,
		"rate_limit": map[string]any{"requests": 60, "period": "minute"}})["id"].(string)
	defaults := 0
	for _, p := range s.owner.Get(prov + "/products/" + s.productID + "/plans").Map()["items"].([]any) {
		if p.(map[string]any)["is_default"] == true {
			defaults++
		}
	}
	require.Equal(t, 1, defaults, "one default per product")
	app3 := created(t, customer, "/v1/customer/apps", map[string]any{"name": "three"})["id"].(string)
	sub = created(t, customer, "/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app3})
	require.Equal(t, team2, sub["plan_id"], "the default plan")
}

// TestRevocationWhileTemporalIsDown: a revocation accepted while the api cannot reach Temporal
// is committed and answered 200; the worker's dispatcher starts its rollout, and every cluster
// confirms it, with no retry by the client.
func TestRevocationWhileTemporalIsDown(t *testing.T) {
	t.Parallel()
	m := newMarket(t, false, 0)
	m.subscribe(t, m.pubA)
	m.subscribe(t, m.pubB)
	credID, key := m.newKey(t, m.appID)
	m.waitRollout(t, credID, func(d credentialDetail) bool { return allConfirmed(d, models.RolloutUpsert, 2) }, "credential never confirmed")
	require.True(t, m.agentA.agent.Verifier().VerifyAPIKey(m.pubA, key).Allowed)

	// The api's Temporal client now points at nothing that answers.
	real, err := m.env.Temporal.Client()
	require.NoError(t, err)
	dead, err := client.NewLazyClient(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))})
	require.NoError(t, err)
	m.env.Temporal.Set(dead)
	r := m.customer.Post("/v1/customer/credentials/"+credID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, models.CredentialRevoked, r.Map()["status"])
	r = m.customer.Post("/v1/customer/credentials/"+credID+"/revoke", nil)
	require.Equal(t, http.StatusConflict, r.Status, "a retry finds it revoked; nothing for the client to do")
	m.env.Temporal.Set(real)

	d := m.waitRollout(t, credID, func(d credentialDetail) bool { return allConfirmed(d, models.RolloutRevoke, 2) },
		"the stranded revocation was never dispatched")
	require.True(t, d.RevocationConfirmed)
	require.False(t, m.agentA.agent.Verifier().VerifyAPIKey(m.pubA, key).Allowed, "the agent refuses the key")
	require.Contains(t, m.env.Logs(), "dispatcher: started a stranded credential rollout")
}
