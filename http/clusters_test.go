package http_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
)

// The operator's physical layer: clusters, registration tokens and agents, black box through
// the REST API (every response checked against the OpenAPI document). Agents are rows made
// in SQL here; the agent gateway's own tests run the real agent.

func init() {
	moduleRBACCasesFns = append(moduleRBACCasesFns, clusterRBACCases)
}

// clusterRBACCases: operator and admin may use every /v1/operator/clusters and
// /v1/operator/agents endpoint; a plain user and a provider owner get 403, anonymous 401.
func clusterRBACCases(w *world) []rbacCase {
	t := w.env.T
	ops := w.env.As(opsP)
	newCluster := func(name string) string {
		r := ops.Post("/v1/operator/clusters", map[string]any{"name": name, "region": "rbac"})
		require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
		return r.Map()["id"].(string)
	}
	newToken := func(cluster string) string {
		r := ops.Post("/v1/operator/clusters/"+cluster+"/registration-tokens", map[string]any{})
		require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
		return r.Map()["id"].(string)
	}
	shared := newCluster("rbac-shared")
	agent := map[string]string{}
	doomed := map[string]string{}
	token := map[string]string{}
	for _, who := range []string{"operator", "admin"} {
		agent[who] = insertAgent(t, w.env, shared, "rbac-"+who, models.AgentDisconnected)
		doomed[who] = newCluster("rbac-doomed-" + who)
		token[who] = newToken(shared)
	}
	anyAgent, anyToken := agent["operator"], token["operator"]

	cl := "/v1/operator/clusters/" + shared
	var cases []rbacCase
	// Who may not: every endpoint, the same answer.
	for _, who := range []struct {
		name string
		want int
	}{{"anonymous", 401}, {"user", 403}, {"owner", 403}} {
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/operator/clusters", nil},
			{"POST", "/v1/operator/clusters", map[string]any{"name": "rbac-no-" + who.name, "region": "rbac"}},
			{"GET", cl, nil},
			{"PATCH", cl, map[string]any{"description": "no"}},
			{"DELETE", "/v1/operator/clusters/" + doomed["operator"], nil},
			{"POST", cl + "/maintenance", map[string]any{"enabled": true}},
			{"POST", cl + "/registration-tokens", map[string]any{}},
			{"GET", cl + "/registration-tokens", nil},
			{"POST", cl + "/registration-tokens/" + anyToken + "/revoke", nil},
			{"GET", "/v1/operator/agents", nil},
			{"GET", "/v1/operator/agents/" + anyAgent, nil},
			{"GET", "/v1/operator/agents/" + anyAgent + "/events", nil},
			{"POST", "/v1/operator/agents/" + anyAgent + "/rotate-token", nil},
			{"POST", "/v1/operator/agents/" + anyAgent + "/revoke", nil},
			{"DELETE", "/v1/operator/agents/" + anyAgent, nil},
		} {
			cases = append(cases, rbacCase{who.name, c.method, c.path, c.body, who.want})
		}
	}
	// Who may: operator and admin, each through the whole lifecycle.
	for _, who := range []string{"operator", "admin"} {
		ag := "/v1/operator/agents/" + agent[who]
		cases = append(cases,
			rbacCase{who, "GET", "/v1/operator/clusters", nil, 200},
			rbacCase{who, "POST", "/v1/operator/clusters", map[string]any{"name": "rbac-new-" + who, "region": "rbac"}, 201},
			rbacCase{who, "GET", cl, nil, 200},
			rbacCase{who, "PATCH", cl, map[string]any{"description": "by " + who}, 200},
			rbacCase{who, "POST", cl + "/maintenance", map[string]any{"enabled": true}, 200},
			rbacCase{who, "POST", cl + "/maintenance", map[string]any{"enabled": false}, 200},
			rbacCase{who, "POST", cl + "/registration-tokens", map[string]any{}, 201},
			rbacCase{who, "GET", cl + "/registration-tokens", nil, 200},
			rbacCase{who, "POST", cl + "/registration-tokens/" + token[who] + "/revoke", nil, 200},
			rbacCase{who, "DELETE", "/v1/operator/clusters/" + doomed[who], nil, 204},
			rbacCase{who, "GET", "/v1/operator/agents", nil, 200},
			rbacCase{who, "GET", ag, nil, 200},
			rbacCase{who, "GET", ag + "/events", nil, 200},
			rbacCase{who, "POST", ag + "/rotate-token", nil, 200},
			rbacCase{who, "POST", ag + "/revoke", nil, 200},
			rbacCase{who, "DELETE", ag, nil, 204},
		)
	}
	return cases
}

// insertAgent makes an agent row as the gateway would after registration.
func insertAgent(t testing.TB, env *apitest.Env, clusterID, name, status string) string {
	t.Helper()
	var hb *time.Time
	if status == models.AgentConnected || status == models.AgentDisconnected {
		now := time.Now().UTC()
		hb = &now
	}
	return env.DB.InsertAgent(t, clusterID, name, status, hb, strings.Repeat("ab", 32))
}

// addAgentEvent appends an event to an agent's history, at a given age so the order is known.
func addAgentEvent(t *testing.T, env *apitest.Env, agentID, clusterID, typ string, ago time.Duration) {
	t.Helper()
	env.DB.InsertAgentEvent(t, agentID, clusterID, typ, ago)
}

func newClusterEnv(t *testing.T) (*apitest.Env, *apitest.Client) {
	t.Helper()
	env := apitest.New(t, apitest.Options{})
	return env, env.As(opsP)
}

func createCluster(t *testing.T, c *apitest.Client, body map[string]any) map[string]any {
	t.Helper()
	r := c.Post("/v1/operator/clusters", body)
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	return r.Map()
}

// fieldsOf lists the fields a problem names.
func fieldsOf(p httpapi.Problem) []string {
	out := make([]string, 0, len(p.Errors))
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

// requireAudit waits for the audit row of a mutation (it is written once the handler
// succeeded) and returns its summary as text.
func requireAudit(t *testing.T, env *apitest.Env, action, resourceID string) string {
	t.Helper()
	var summary string
	require.Eventually(t, func() bool {
		var err error
		summary, err = env.DB.LatestRequestAudit(action, resourceID)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "no audit row %s for %s", action, resourceID)
	return summary
}

func auditCount(t *testing.T, env *apitest.Env) int {
	t.Helper()
	return env.DB.Count(t, "audit_logs")
}

// requireNoSecretInAudit fails if the secret, or its stored hash, appears anywhere in audit_logs.
func requireNoSecretInAudit(t *testing.T, env *apitest.Env, secret string) {
	t.Helper()
	h := sha256.Sum256([]byte(secret))
	for _, s := range []string{secret, hex.EncodeToString(h[:])} {
		require.Zero(t, env.DB.CountContaining(t, "audit_logs", s), "a registration token secret (or its hash) is in audit_logs")
	}
}

func TestClusterLifecycle(t *testing.T) {
	t.Parallel()
	env, ops := newClusterEnv(t)

	cl := createCluster(t, ops, map[string]any{"name": "kr-prod-1", "region": "kr-central", "cloud_provider": "aws", "description": "Seoul",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway", "versions": []string{"1.2"}}, {"name": "nginx"}}},
		"metadata":     map[string]any{"team": "edge"}})
	id := cl["id"].(string)
	require.Equal(t, "kr-prod-1", cl["name"])
	require.Equal(t, "kr-central", cl["region"])
	require.Equal(t, "aws", cl["cloud_provider"])
	require.Equal(t, models.ClusterPending, cl["status"], "a new cluster waits for its first agent")
	require.EqualValues(t, 0, cl["agent_count"])
	require.EqualValues(t, 0, cl["connected_agents"])
	require.Nil(t, cl["last_heartbeat_at"])
	require.Equal(t, map[string]any{"team": "edge"}, cl["metadata"])
	classes := cl["capabilities"].(map[string]any)["gateway_classes"].([]any)
	require.Len(t, classes, 2)
	require.Equal(t, []any{"1.2"}, classes[0].(map[string]any)["versions"])
	require.Contains(t, requireAudit(t, env, "cluster.create", id), "kr-central")

	r := ops.Get("/v1/operator/clusters/" + id)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, cl["capabilities"], r.Map()["capabilities"])

	// A minimal cluster gets empty capabilities and metadata, not nulls.
	bare := createCluster(t, ops, map[string]any{"name": "a", "region": "r"})
	require.Equal(t, map[string]any{"gateway_classes": []any{}}, bare["capabilities"])
	require.Equal(t, map[string]any{}, bare["metadata"])

	// PATCH changes what may change; name and region accept only their current value.
	r = ops.Patch("/v1/operator/clusters/"+id, map[string]any{"name": "kr-prod-1", "region": "kr-central", "description": "Seoul, zone a",
		"cloud_provider": "gcp", "capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "nginx"}}}, "metadata": map[string]any{"team": "core"}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	after := r.Map()
	require.Equal(t, "Seoul, zone a", after["description"])
	require.Equal(t, "gcp", after["cloud_provider"])
	require.Equal(t, map[string]any{"team": "core"}, after["metadata"])
	require.Equal(t, []any{map[string]any{"name": "nginx"}}, after["capabilities"].(map[string]any)["gateway_classes"])
	require.Contains(t, requireAudit(t, env, "cluster.update", id), "cloud_provider")

	for field, body := range map[string]map[string]any{
		"name":   {"name": "kr-prod-2"},
		"region": {"region": "us-east"},
	} {
		before := auditCount(t, env)
		r := ops.Patch("/v1/operator/clusters/"+id, body)
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, field)
		p := r.Problem()
		require.Equal(t, "validation_failed", p.Code)
		require.Equal(t, []string{field}, fieldsOf(p))
		require.Contains(t, p.Errors[0].Message, "immutable")
		require.Equal(t, before, auditCount(t, env), "a refused change is not audited")
	}
	r = ops.Get("/v1/operator/clusters/" + id)
	require.Equal(t, "kr-prod-1", r.Map()["name"])
	require.Equal(t, "kr-central", r.Map()["region"])

	// Delete, then it is gone.
	r = ops.Delete("/v1/operator/clusters/" + id)
	require.Equal(t, http.StatusNoContent, r.Status)
	requireAudit(t, env, "cluster.delete", id)
	r = ops.Get("/v1/operator/clusters/" + id)
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, "not_found", r.Problem().Code)
	require.Equal(t, http.StatusNotFound, ops.Delete("/v1/operator/clusters/"+id).Status)
	require.Equal(t, http.StatusNotFound, ops.Patch("/v1/operator/clusters/"+id, map[string]any{"description": "x"}).Status)

	r = ops.Get("/v1/operator/clusters/not-a-uuid")
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, []string{"id"}, fieldsOf(r.Problem()))
}

func TestClusterValidation(t *testing.T) {
	t.Parallel()
	env, ops := newClusterEnv(t)
	existing := createCluster(t, ops, map[string]any{"name": "taken", "region": "kr"})
	clusters, audits := 1, auditCount(t, env)

	caps := func(names ...string) map[string]any {
		cs := make([]map[string]any, 0, len(names))
		for _, n := range names {
			cs = append(cs, map[string]any{"name": n})
		}
		return map[string]any{"gateway_classes": cs}
	}
	cases := []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"missing name", map[string]any{"region": "kr"}, 422, "validation_failed", "name"},
		{"upper-case name", map[string]any{"name": "KR-prod", "region": "kr"}, 422, "validation_failed", "name"},
		{"underscore in name", map[string]any{"name": "kr_prod", "region": "kr"}, 422, "validation_failed", "name"},
		{"leading dash", map[string]any{"name": "-kr", "region": "kr"}, 422, "validation_failed", "name"},
		{"trailing dash", map[string]any{"name": "kr-", "region": "kr"}, 422, "validation_failed", "name"},
		{"name of 64", map[string]any{"name": strings.Repeat("a", 64), "region": "kr"}, 422, "validation_failed", "name"},
		{"dotted name", map[string]any{"name": "kr.prod", "region": "kr"}, 422, "validation_failed", "name"},
		{"missing region", map[string]any{"name": "ok"}, 422, "validation_failed", "region"},
		{"blank region", map[string]any{"name": "ok", "region": "   "}, 422, "validation_failed", "region"},
		{"region of 101", map[string]any{"name": "ok", "region": strings.Repeat("r", 101)}, 422, "validation_failed", "region"},
		{"unknown gateway class", map[string]any{"name": "ok", "region": "kr", "capabilities": caps("envoy-gateway", "traefik")}, 422, "validation_failed", "capabilities.gateway_classes[1].name"},
		{"duplicate gateway class", map[string]any{"name": "ok", "region": "kr", "capabilities": caps("nginx", "nginx")}, 422, "validation_failed", "capabilities.gateway_classes[1].name"},
		{"description of 501", map[string]any{"name": "ok", "region": "kr", "description": strings.Repeat("d", 501)}, 422, "validation_failed", "description"},
		{"cloud provider of 51", map[string]any{"name": "ok", "region": "kr", "cloud_provider": strings.Repeat("c", 51)}, 422, "validation_failed", "cloud_provider"},
		{"unknown body field", map[string]any{"name": "ok", "region": "kr", "zone": "a"}, 400, "unknown_field", "zone"},
		{"unknown capabilities field", map[string]any{"name": "ok", "region": "kr", "capabilities": map[string]any{"classes": []string{}}}, 400, "unknown_field", "classes"},
		{"name of the wrong type", map[string]any{"name": 7, "region": "kr"}, 400, "invalid_type", "name"},
		{"malformed", `{"name": "ok",`, 400, "malformed_json", ""},
		{"name taken", map[string]any{"name": "taken", "region": "us"}, 409, "name_taken", ""},
	}
	for _, tc := range cases {
		r := ops.Post("/v1/operator/clusters", tc.body)
		require.Equal(t, tc.status, r.Status, "%s: %s", tc.name, r.Body)
		p := r.Problem()
		require.Equal(t, tc.code, p.Code, tc.name)
		if tc.field != "" {
			require.Contains(t, fieldsOf(p), tc.field, tc.name)
		}
	}
	// Several failures are reported together.
	r := ops.Post("/v1/operator/clusters", map[string]any{"name": "Bad", "description": strings.Repeat("d", 501)})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.ElementsMatch(t, []string{"name", "region", "description"}, fieldsOf(r.Problem()))

	// PATCH validates the same way.
	id := existing["id"].(string)
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"description": strings.Repeat("d", 501)}, "description"},
		{map[string]any{"capabilities": caps("istio")}, "capabilities.gateway_classes[0].name"},
		{map[string]any{"cloud_provider": strings.Repeat("c", 51)}, "cloud_provider"},
	} {
		r := ops.Patch("/v1/operator/clusters/"+id, tc.body)
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, tc.field)
		require.Equal(t, []string{tc.field}, fieldsOf(r.Problem()))
	}
	r = ops.Patch("/v1/operator/clusters/"+id, map[string]any{"status": "active"})
	require.Equal(t, http.StatusBadRequest, r.Status, "status is not set by PATCH")
	require.Equal(t, []string{"status"}, fieldsOf(r.Problem()))

	require.Equal(t, clusters, env.DB.Count(t, "clusters"), "nothing created")
	require.Equal(t, audits, auditCount(t, env), "nothing audited")
	r = ops.Get("/v1/operator/clusters/" + id)
	require.Equal(t, existing["description"], r.Map()["description"], "nothing changed")
}

func TestClusterListFiltersAndPages(t *testing.T) {
	t.Parallel()
	_, ops := newClusterEnv(t)
	regions := map[string]string{"kr-1": "kr", "kr-2": "kr", "kr-3": "kr", "us-1": "us", "us-2": "us"}
	ids := map[string]string{}
	for _, name := range []string{"kr-1", "us-1", "kr-2", "us-2", "kr-3"} {
		ids[name] = createCluster(t, ops, map[string]any{"name": name, "region": regions[name]})["id"].(string)
	}
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/clusters/"+ids["kr-2"]+"/maintenance", map[string]any{"enabled": true}).Status)

	type page struct {
		Items []struct {
			ID, Name, Region, Status string
		} `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	list := func(q string) page {
		t.Helper()
		r := ops.Get("/v1/operator/clusters?" + q)
		require.Equal(t, http.StatusOK, r.Status, q)
		var p page
		r.JSON(&p)
		return p
	}
	names := func(p page) []string {
		var out []string
		for _, it := range p.Items {
			out = append(out, it.Name)
		}
		return out
	}
	require.Equal(t, []string{"kr-3", "us-2", "kr-2", "us-1", "kr-1"}, names(list("")), "newest first")
	require.Equal(t, []string{"kr-3", "kr-2", "kr-1"}, names(list("region=kr")))
	require.Equal(t, []string{"kr-2"}, names(list("status=maintenance")))
	require.Equal(t, []string{"kr-3", "kr-1"}, names(list("status=pending&region=kr")))
	require.Empty(t, list("region=eu").Items)
	require.Nil(t, list("region=eu").NextCursor)

	// Keyset pages: every cluster once, in order, and the last page has no cursor.
	var got []string
	q := "limit=2"
	pages := 0
	for {
		p := list(q)
		pages++
		got = append(got, names(p)...)
		if p.NextCursor == nil {
			break
		}
		require.Len(t, p.Items, 2)
		q = "limit=2&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	require.Equal(t, 3, pages)
	require.Equal(t, []string{"kr-3", "us-2", "kr-2", "us-1", "kr-1"}, got)
	// A filter holds across pages.
	p := list("limit=2&region=kr")
	require.Equal(t, []string{"kr-3", "kr-2"}, names(p))
	require.NotNil(t, p.NextCursor)
	require.Equal(t, []string{"kr-1"}, names(list("limit=2&region=kr&cursor="+url.QueryEscape(*p.NextCursor))))

	for _, q := range []string{"status=broken", "limit=0", "limit=101", "cursor=!!!"} {
		r := ops.Get("/v1/operator/clusters?" + q)
		require.Equal(t, http.StatusBadRequest, r.Status, q)
		require.Equal(t, "invalid_query", r.Problem().Code, q)
	}
}

func TestClusterMaintenanceAndAgentCounts(t *testing.T) {
	t.Parallel()
	env, ops := newClusterEnv(t)
	id := createCluster(t, ops, map[string]any{"name": "edge", "region": "kr"})["id"].(string)
	path := "/v1/operator/clusters/" + id

	maintenance := func(on bool) map[string]any {
		t.Helper()
		r := ops.Post(path+"/maintenance", map[string]any{"enabled": on, "reason": "kernel upgrade"})
		require.Equal(t, http.StatusOK, r.Status, string(r.Body))
		return r.Map()
	}
	// No agent ever: on -> maintenance, off -> back to pending.
	require.Equal(t, models.ClusterMaintenance, maintenance(true)["status"])
	summary := requireAudit(t, env, "cluster.maintenance_on", id)
	require.Contains(t, summary, `"before": "pending"`)
	require.Contains(t, summary, "kernel upgrade")
	require.Equal(t, models.ClusterPending, maintenance(false)["status"])
	requireAudit(t, env, "cluster.maintenance_off", id)

	// With agents that are all disconnected (revoked ones do not count): off -> inactive.
	insertAgent(t, env, id, "a-1", models.AgentDisconnected)
	insertAgent(t, env, id, "a-2", models.AgentRevoked)
	r := ops.Get(path)
	require.EqualValues(t, 1, r.Map()["agent_count"], "revoked agents are not counted")
	require.EqualValues(t, 0, r.Map()["connected_agents"])
	require.NotNil(t, r.Map()["last_heartbeat_at"])
	maintenance(true)
	require.Equal(t, models.ClusterInactive, maintenance(false)["status"])

	// With a connected agent: off -> active.
	insertAgent(t, env, id, "a-3", models.AgentConnected)
	require.Equal(t, models.ClusterMaintenance, maintenance(true)["status"])
	cl := maintenance(false)
	require.Equal(t, models.ClusterActive, cl["status"])
	require.EqualValues(t, 2, cl["agent_count"])
	require.EqualValues(t, 1, cl["connected_agents"])

	for _, tc := range []struct {
		body  any
		code  int
		field string
	}{
		{map[string]any{}, 422, "enabled"},
		{map[string]any{"enabled": true, "reason": strings.Repeat("r", 501)}, 422, "reason"},
		{map[string]any{"enabled": "yes"}, 400, "enabled"},
		{map[string]any{"enabled": true, "until": "tomorrow"}, 400, "until"},
	} {
		r := ops.Post(path+"/maintenance", tc.body)
		require.Equal(t, tc.code, r.Status, string(r.Body))
		require.Equal(t, []string{tc.field}, fieldsOf(r.Problem()))
	}
	require.Equal(t, models.ClusterActive, ops.Get(path).Map()["status"], "refused requests change nothing")
	require.Equal(t, http.StatusNotFound, ops.Post("/v1/operator/clusters/00000000-0000-0000-0000-000000000000/maintenance", map[string]any{"enabled": true}).Status)
}

func TestRegistrationTokens(t *testing.T) {
	t.Parallel()
	env, ops := newClusterEnv(t)
	id := createCluster(t, ops, map[string]any{"name": "edge", "region": "kr"})["id"].(string)
	other := createCluster(t, ops, map[string]any{"name": "other", "region": "kr"})["id"].(string)
	path := "/v1/operator/clusters/" + id + "/registration-tokens"

	// Defaults: 30 minutes, single use. The token is in this response and nowhere else.
	before := time.Now()
	r := ops.Do(http.MethodPost, path, nil)
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	var created struct {
		ID        string    `json:"id"`
		Token     string    `json:"token"`
		Prefix    string    `json:"prefix"`
		State     string    `json:"state"`
		ClusterID string    `json:"cluster_id"`
		MaxUses   int       `json:"max_uses"`
		Uses      int       `json:"uses"`
		ExpiresAt time.Time `json:"expires_at"`
		CreatedBy string    `json:"created_by"`
	}
	r.JSON(&created)
	require.True(t, strings.HasPrefix(created.Token, "imprt_"), created.Token)
	require.Greater(t, len(created.Token), 40)
	require.True(t, strings.HasPrefix(created.Token, created.Prefix))
	require.Less(t, len(created.Prefix), len(created.Token))
	require.Equal(t, 1, created.MaxUses)
	require.Equal(t, 0, created.Uses)
	require.Equal(t, "active", created.State)
	require.Equal(t, opsP.Email, created.CreatedBy)
	require.Equal(t, id, created.ClusterID)
	require.WithinDuration(t, before.Add(30*time.Minute), created.ExpiresAt, 10*time.Second)
	requireAudit(t, env, "registration_token.create", created.ID)

	r = ops.Post(path, map[string]any{"ttl_seconds": 3600, "max_uses": 10, "description": "rack 4"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	multi := r.Map()
	require.EqualValues(t, 10, multi["max_uses"])
	require.Equal(t, "rack 4", multi["description"])
	exp, err := time.Parse(time.RFC3339Nano, multi["expires_at"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Hour), exp, 10*time.Second)
	summary := requireAudit(t, env, "registration_token.create", multi["id"].(string))
	require.Contains(t, summary, `"max_uses": 10`)
	r = ops.Post(path, map[string]any{"ttl_seconds": 604800, "max_uses": 1000})
	require.Equal(t, http.StatusCreated, r.Status, "the upper bounds are allowed")
	longest := r.Map()
	r = ops.Post(path, map[string]any{"ttl_seconds": 60, "max_uses": 1})
	require.Equal(t, http.StatusCreated, r.Status, "the lower bounds are allowed")
	shortest := r.Map()

	// Bounds and unknown fields.
	audits := auditCount(t, env)
	for _, tc := range []struct {
		body  any
		code  int
		field string
	}{
		{map[string]any{"ttl_seconds": 59}, 422, "ttl_seconds"},
		{map[string]any{"ttl_seconds": 0}, 422, "ttl_seconds"},
		{map[string]any{"ttl_seconds": -60}, 422, "ttl_seconds"},
		{map[string]any{"ttl_seconds": 604801}, 422, "ttl_seconds"},
		{map[string]any{"max_uses": 0}, 422, "max_uses"},
		{map[string]any{"max_uses": 1001}, 422, "max_uses"},
		{map[string]any{"description": strings.Repeat("d", 501)}, 422, "description"},
		{map[string]any{"token": "imprt_chosen-by-me"}, 400, "token"},
		{map[string]any{"max_uses": "ten"}, 400, "max_uses"},
	} {
		r := ops.Post(path, tc.body)
		require.Equal(t, tc.code, r.Status, "%v: %s", tc.body, r.Body)
		require.Equal(t, []string{tc.field}, fieldsOf(r.Problem()), "%v", tc.body)
	}
	require.Equal(t, audits, auditCount(t, env))
	require.Equal(t, http.StatusNotFound, ops.Post("/v1/operator/clusters/00000000-0000-0000-0000-000000000000/registration-tokens", map[string]any{}).Status)

	// A used-up and an expired token show their state.
	env.DB.UseUpRegistrationToken(t, shortest["id"])
	env.DB.ExpireRegistrationToken(t, longest["id"])

	// Revoke.
	r = ops.Post(path+"/"+multi["id"].(string)+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "revoked", r.Map()["state"])
	require.NotNil(t, r.Map()["revoked_at"])
	requireAudit(t, env, "registration_token.revoke", multi["id"].(string))
	require.Equal(t, http.StatusOK, ops.Post(path+"/"+multi["id"].(string)+"/revoke", nil).Status, "revoking twice is harmless")
	r = ops.Post("/v1/operator/clusters/"+other+"/registration-tokens/"+multi["id"].(string)+"/revoke", nil)
	require.Equal(t, http.StatusNotFound, r.Status, "a token of another cluster is not found")
	require.Equal(t, http.StatusNotFound, ops.Post(path+"/00000000-0000-0000-0000-000000000000/revoke", nil).Status)
	require.Equal(t, http.StatusBadRequest, ops.Post(path+"/nope/revoke", nil).Status)

	// The list shows every token's state and never a secret.
	r = ops.Get(path)
	require.Equal(t, http.StatusOK, r.Status)
	require.NotContains(t, string(r.Body), created.Token)
	require.NotContains(t, string(r.Body), `"token"`)
	var list struct {
		Items []map[string]any `json:"items"`
	}
	r.JSON(&list)
	states := map[string]string{}
	for _, it := range list.Items {
		states[it["id"].(string)] = it["state"].(string)
	}
	require.Equal(t, map[string]string{
		created.ID: "active", multi["id"].(string): "revoked", longest["id"].(string): "expired", shortest["id"].(string): "used",
	}, states)
	r = ops.Get("/v1/operator/clusters/" + other + "/registration-tokens")
	require.Empty(t, r.Map()["items"], "tokens are per cluster")

	// Keyset pages over the tokens.
	r = ops.Get(path + "?limit=3")
	var page struct {
		Items      []map[string]any `json:"items"`
		NextCursor *string          `json:"next_cursor"`
	}
	r.JSON(&page)
	require.Len(t, page.Items, 3)
	require.NotNil(t, page.NextCursor)
	r = ops.Get(path + "?limit=3&cursor=" + url.QueryEscape(*page.NextCursor))
	r.JSON(&page)
	require.Len(t, page.Items, 1)
	require.Nil(t, page.NextCursor)

	// Only the hash is stored.
	stored := env.DB.RegistrationTokenHash(t, created.ID)
	h := sha256.Sum256([]byte(created.Token))
	require.Equal(t, hex.EncodeToString(h[:]), stored)
	require.Zero(t, env.DB.CountContaining(t, "registration_tokens", created.Token))
	requireNoSecretInAudit(t, env, created.Token)
}

func TestAgentsOperatorAPI(t *testing.T) {
	t.Parallel()
	env, ops := newClusterEnv(t)
	kr := createCluster(t, ops, map[string]any{"name": "kr", "region": "kr"})["id"].(string)
	us := createCluster(t, ops, map[string]any{"name": "us", "region": "us"})["id"].(string)
	a1 := insertAgent(t, env, kr, "kr-a", models.AgentConnected)
	a2 := insertAgent(t, env, kr, "kr-b", models.AgentDisconnected)
	a3 := insertAgent(t, env, us, "us-a", models.AgentConnected)
	a4 := insertAgent(t, env, us, "us-b", models.AgentPending)

	type agentPage struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	ids := func(q string) []string {
		t.Helper()
		r := ops.Get("/v1/operator/agents?" + q)
		require.Equal(t, http.StatusOK, r.Status, q)
		var p struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
		}
		r.JSON(&p)
		out := []string{}
		for _, it := range p.Items {
			out = append(out, it.ID)
		}
		return out
	}
	require.Equal(t, []string{a4, a3, a2, a1}, ids(""), "newest first")
	require.Equal(t, []string{a2, a1}, ids("cluster_id="+kr))
	require.Equal(t, []string{a3, a1}, ids("status=connected"))
	require.Equal(t, []string{a3}, ids("status=connected&cluster_id="+us))
	require.Equal(t, []string{}, ids("status=revoked"))
	require.Equal(t, []string{}, ids("cluster_id=00000000-0000-0000-0000-000000000000"))
	// Keyset pages.
	r := ops.Get("/v1/operator/agents?limit=3")
	var p agentPage
	r.JSON(&p)
	require.Len(t, p.Items, 3)
	require.NotNil(t, p.NextCursor)
	require.Equal(t, []string{a1}, ids("limit=3&cursor="+url.QueryEscape(*p.NextCursor)))
	for _, q := range []string{"cluster_id=kr", "status=online", "limit=1000"} {
		r := ops.Get("/v1/operator/agents?" + q)
		require.Equal(t, http.StatusBadRequest, r.Status, q)
		require.Equal(t, "invalid_query", r.Problem().Code)
	}

	// The cluster view counts them.
	cl := ops.Get("/v1/operator/clusters/" + kr).Map()
	require.EqualValues(t, 2, cl["agent_count"])
	require.EqualValues(t, 1, cl["connected_agents"])

	// Detail with recent events, newest first; the full list pages.
	for i, typ := range []string{models.EventRegistered, models.EventTokenIssued, models.EventConnected, models.EventDisconnected, models.EventConnected} {
		addAgentEvent(t, env, a1, kr, typ, time.Duration(10-i)*time.Second)
	}
	r = ops.Get("/v1/operator/agents/" + a1)
	require.Equal(t, http.StatusOK, r.Status)
	var detail struct {
		Name              string  `json:"name"`
		Status            string  `json:"status"`
		ClusterName       string  `json:"cluster_name"`
		RefreshSecretHash *string `json:"refresh_secret_hash"`
		RecentEvents      []struct {
			Type    string `json:"type"`
			AgentID string `json:"agent_id"`
		} `json:"recent_events"`
	}
	r.JSON(&detail)
	require.Equal(t, "kr-a", detail.Name)
	require.Equal(t, models.AgentConnected, detail.Status)
	require.Equal(t, "kr", detail.ClusterName)
	require.Nil(t, detail.RefreshSecretHash)
	require.NotContains(t, string(r.Body), strings.Repeat("ab", 32), "no secret hash in the view")
	var types []string
	for _, e := range detail.RecentEvents {
		types = append(types, e.Type)
		require.Equal(t, a1, e.AgentID)
	}
	require.Equal(t, []string{"connected", "disconnected", "connected", "token_issued", "registered"}, types)
	r = ops.Get("/v1/operator/agents/" + a2)
	require.Equal(t, []any{}, r.Map()["recent_events"], "no events: an empty list")

	r = ops.Get("/v1/operator/agents/" + a1 + "/events?limit=2")
	require.Equal(t, http.StatusOK, r.Status)
	var events struct {
		Items []struct {
			Type string `json:"type"`
		} `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}
	r.JSON(&events)
	require.Len(t, events.Items, 2)
	require.Equal(t, "connected", events.Items[0].Type)
	seen := len(events.Items)
	for events.NextCursor != nil {
		r = ops.Get("/v1/operator/agents/" + a1 + "/events?limit=2&cursor=" + url.QueryEscape(*events.NextCursor))
		events.NextCursor = nil
		r.JSON(&events)
		seen += len(events.Items)
	}
	require.Equal(t, 5, seen)
	require.Equal(t, http.StatusNotFound, ops.Get("/v1/operator/agents/00000000-0000-0000-0000-000000000000").Status)
	require.Equal(t, http.StatusNotFound, ops.Get("/v1/operator/agents/00000000-0000-0000-0000-000000000000/events").Status)
	require.Equal(t, http.StatusBadRequest, ops.Get("/v1/operator/agents/x").Status)

	// Rotate: the generation moves on and it is recorded.
	gen := env.DB.AgentTokenGeneration(t, a2)
	r = ops.Post("/v1/operator/agents/"+a2+"/rotate-token", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, false, r.Map()["agent_notified"], "a disconnected agent gets its new token when it reconnects")
	require.Equal(t, gen+1, env.DB.AgentTokenGeneration(t, a2))
	require.Contains(t, requireAudit(t, env, "agent.rotate_token", a2), "agent_notified")
	r = ops.Get("/v1/operator/agents/" + a2 + "/events")
	require.Contains(t, string(r.Body), `"type":"token_issued"`)

	// Revoke: for good, recorded, and a revoked agent has no token to rotate.
	r = ops.Post("/v1/operator/agents/"+a1+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, models.AgentRevoked, r.Map()["status"])
	require.NotNil(t, r.Map()["revoked_at"])
	require.Contains(t, requireAudit(t, env, "agent.revoke", a1), `"after": "revoked"`)
	require.Nil(t, env.DB.AgentRefreshSecretHash(t, a1), "its refresh secret is gone")
	r = ops.Get("/v1/operator/agents/" + a1)
	require.Equal(t, "token_revoked", r.Map()["recent_events"].([]any)[0].(map[string]any)["type"])
	audits := auditCount(t, env)
	r = ops.Post("/v1/operator/agents/"+a1+"/rotate-token", nil)
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "agent_revoked", r.Problem().Code)
	require.Equal(t, models.AgentRevoked, r.Problem().CurrentStatus)
	require.Equal(t, audits, auditCount(t, env), "a refused rotation is not audited")
	r = ops.Post("/v1/operator/agents/"+a1+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status, "revoking twice is harmless")
	require.Equal(t, []string{a1}, ids("status=revoked"))
	cl = ops.Get("/v1/operator/clusters/" + kr).Map()
	require.EqualValues(t, 1, cl["agent_count"], "a revoked agent is not counted")

	// A cluster with agents (revoked ones too) can't be deleted.
	r = ops.Delete("/v1/operator/clusters/" + kr)
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "cluster_in_use", r.Problem().Code)

	// Delete the agents: the history goes with them, and then the cluster can go.
	for _, a := range []string{a1, a2} {
		r = ops.Delete("/v1/operator/agents/" + a)
		require.Equal(t, http.StatusNoContent, r.Status)
		requireAudit(t, env, "agent.delete", a)
		require.Equal(t, http.StatusNotFound, ops.Get("/v1/operator/agents/"+a).Status)
	}
	require.Zero(t, env.DB.CountAgentEvents(t, a1))
	require.Equal(t, http.StatusNotFound, ops.Delete("/v1/operator/agents/"+a1).Status)
	require.Equal(t, http.StatusNotFound, ops.Post("/v1/operator/agents/"+a1+"/revoke", nil).Status)
	require.Equal(t, http.StatusNotFound, ops.Post("/v1/operator/agents/"+a1+"/rotate-token", nil).Status)
	require.Equal(t, http.StatusNoContent, ops.Delete("/v1/operator/clusters/"+kr).Status)
	require.Equal(t, []string{a4, a3}, ids(""))
}

// Every mutation of the module is in audit_logs with its actor and request, and no
// registration token secret is anywhere in it.
func TestClusterAuditTrail(t *testing.T) {
	t.Parallel()
	env, ops := newClusterEnv(t)
	admin := env.As(adminP)
	id := createCluster(t, ops, map[string]any{"name": "edge", "region": "kr"})["id"].(string)
	path := "/v1/operator/clusters/" + id
	require.Equal(t, http.StatusOK, ops.Patch(path, map[string]any{"description": "d"}).Status)
	require.Equal(t, http.StatusOK, ops.Post(path+"/maintenance", map[string]any{"enabled": true}).Status)
	require.Equal(t, http.StatusOK, ops.Post(path+"/maintenance", map[string]any{"enabled": false}).Status)
	var secrets []string
	var tokenID string
	for i := 0; i < 3; i++ {
		r := admin.Post(path+"/registration-tokens", map[string]any{"max_uses": i + 1, "description": fmt.Sprintf("batch %d", i)})
		require.Equal(t, http.StatusCreated, r.Status)
		secrets = append(secrets, r.Map()["token"].(string))
		tokenID = r.Map()["id"].(string)
	}
	require.Equal(t, http.StatusOK, ops.Post(path+"/registration-tokens/"+tokenID+"/revoke", nil).Status)
	agent := insertAgent(t, env, id, "a", models.AgentDisconnected)
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/agents/"+agent+"/rotate-token", nil).Status)
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/agents/"+agent+"/revoke", nil).Status)
	require.Equal(t, http.StatusNoContent, ops.Delete("/v1/operator/agents/"+agent).Status)
	require.Equal(t, http.StatusNoContent, ops.Delete(path).Status)

	want := map[string]int{
		"cluster.create": 1, "cluster.update": 1, "cluster.maintenance_on": 1, "cluster.maintenance_off": 1,
		"registration_token.create": 3, "registration_token.revoke": 1,
		"agent.rotate_token": 1, "agent.revoke": 1, "agent.delete": 1, "cluster.delete": 1,
	}
	var got map[string]int
	require.Eventually(t, func() bool {
		got = map[string]int{}
		for _, a := range env.DB.AuditRequests(t) {
			action, email, reqID, method, p, status := a.Action, a.ActorEmail, a.RequestID, a.Method, a.Path, a.StatusCode
			require.Contains(t, []string{opsP.Email, adminP.Email}, email, action)
			require.NotEmpty(t, reqID, action)
			require.NotEmpty(t, method, action)
			require.True(t, strings.HasPrefix(p, "/v1/operator/"), p)
			require.True(t, status >= 200 && status < 300, "%s: %d", action, status)
			got[action]++
		}
		return fmt.Sprint(got) == fmt.Sprint(want)
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, want, got)

	// The audit log API shows them to a platform admin, filtered by resource.
	r := admin.Get("/v1/operator/audit-logs?resource_type=registration_token&limit=100")
	require.Equal(t, http.StatusOK, r.Status)
	var page struct {
		Items []models.AuditLog `json:"items"`
	}
	r.JSON(&page)
	require.Len(t, page.Items, 4)
	for _, s := range secrets {
		require.NotContains(t, string(r.Body), s)
		requireNoSecretInAudit(t, env, s)
	}
}
