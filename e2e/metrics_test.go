package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

// lazySeries are series a process creates only when their event first happens; the rules may
// name them although a healthy run never shows them.
var lazySeries = map[string]string{
	"temporal_workflow_task_execution_failed": "counted by the Temporal SDK on the first failing workflow task",
}

// TestMetricsAfterTraffic runs the platform's whole story once (publish to an nginx agent,
// traffic, a subscription, a key, a revocation, a refused agent) and then checks that the named
// series exist with bounded labels, and that every query of the Grafana dashboard and every
// alert rule names a series the api, the worker or the agent really exports.
func TestMetricsAfterTraffic(t *testing.T) {
	t.Parallel()
	be := newEchoBackend(t, "v1")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: be.endpoint()})
	plan := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Starter",
		"rate_limit": map[string]any{"requests": 100, "period": "minute"}})["id"].(string)

	addr := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	dir := t.TempDir()
	cfg := s.nginxConfig(t, dir, addr)
	cfg.RegistrationToken = s.token(t)
	cfg.MetricsListen = "127.0.0.1:0"
	a, err := agent.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{dir: dir, agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	t.Cleanup(func() { stopNginx(t, dir) })
	ra.identity(t)

	host := "payments.example.com"
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "api-key"}))["id"].(string)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	require.Equal(t, http.StatusUnauthorized, callGateway(t, addr, host, "/charges", nil).Status)

	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	customer := s.env.As(custP)
	app := created(t, customer, "/v1/customer/apps", map[string]any{"name": "shop"})["id"].(string)
	rs := customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app, "plan_id": plan})
	require.Equal(t, http.StatusCreated, rs.Status, string(rs.Body))
	cred := created(t, customer, "/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})
	credID, apiKey := cred["id"].(string), cred["key"].(string)
	require.Eventually(t, func() bool {
		return callGateway(t, addr, host, "/charges", key(apiKey)).Status == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, http.StatusOK, customer.Post("/v1/customer/credentials/"+credID+"/revoke", map[string]any{"reason": "rotated"}).Status)
	require.Eventually(t, func() bool {
		return callGateway(t, addr, host, "/charges", key(apiKey)).Status == http.StatusUnauthorized
	}, 10*time.Second, 20*time.Millisecond)

	// An agent with a made-up registration token is refused (and stops).
	bogus, err := agent.New(agent.Config{ServerAddr: s.env.Replica.Addr, APIBaseURL: s.env.URL, StateDir: t.TempDir(),
		RegistrationToken: "imp_reg_not-a-real-token", TransportCredentials: insecure.NewCredentials(),
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Logger: s.env.Log.With("component", "bogus-agent")})
	require.NoError(t, err)
	bctx, bcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer bcancel()
	require.ErrorIs(t, bogus.Run(bctx), agent.ErrRegistrationRefused)

	// What the api and the worker export (one registry in the tests), and the agent's /metrics.
	var series map[string][]string
	require.Eventually(t, func() bool {
		series = gatherSeries(t, s.env.URL+"/metrics", "http://"+a.MetricsAddr()+"/metrics")
		return hasLine(series, "imprun_credential_rollout_duration_seconds_count", `action="revoke"`) &&
			hasLine(series, "imprun_agentgw_commands_total", `stage="acknowledged"`)
	}, 20*time.Second, 200*time.Millisecond, "the revocation's rollout and acknowledgement series never appeared")

	for name, want := range map[string]string{
		"imprun_publish_outcomes_total":                    `outcome="published"`,
		"imprun_publish_duration_seconds_count":            `outcome="published"`,
		"imprun_agent_commands_queued_total":               `kind="deploy"`,
		"imprun_agentgw_commands_total":                    `kind="credential_revoke",replica="replica-1",stage="sent"`,
		"imprun_agentgw_delivery_lag_seconds_count":        `kind="deploy"`,
		"imprun_agentgw_sessions_total":                    `event="opened",reason="registration_token"`,
		"imprun_agentgw_auth_failures_total":               `reason="registration_token_refused"`,
		"imprun_agentgw_connected_agents":                  `cluster="kr-prod-1"`,
		"imprun_agentgw_heartbeat_age_seconds":             `cluster="kr-prod-1"`,
		"imprun_cluster_connected_agents":                  `cluster="kr-prod-1"`,
		"imprun_credential_rollout_duration_seconds_count": `action="revoke"`,
		"imprun_subscription_transitions_total":            `outcome="active"`,
		"imprun_agent_applies_total":                       `outcome="succeeded"`,
		"imprun_agent_verifier_decisions_total":            `decision="denied",reason="malformed_credential"`,
		"imprun_http_requests_total":                       `route="/v1/provider/product-publishes"`,
		"temporal_workflow_completed":                      `workflow_type="PublishWorkflow"`,
		"temporal_request":                                 `operation=`,
	} {
		require.True(t, hasLine(series, name, want), "no %s{...%s...}: %v", name, want, series[name])
	}
	// Labels stay bounded: no publish, credential or agent id is ever a label value.
	for name, lines := range series {
		for _, l := range lines {
			for _, id := range []string{pub, credID, app} {
				require.NotContains(t, l, id, "%s carries an id as a label", name)
			}
		}
	}

	// Every query of the dashboard and every alert names a series that exists.
	root := testharness.RepoRoot()
	for _, q := range dashboardQueries(t, filepath.Join(root, "deploy/grafana/imprun.json")) {
		for _, m := range metricNames(q) {
			require.Contains(t, series, m, "dashboard query %q names %s, which no process exports", q, m)
		}
	}
	for _, q := range ruleExprs(t, filepath.Join(root, "deploy/prometheus/rules.yaml")) {
		for _, m := range metricNames(q) {
			if _, lazy := lazySeries[m]; lazy {
				continue
			}
			require.Contains(t, series, m, "alert expression %q names %s, which no process exports", q, m)
		}
	}
}

// gatherSeries scrapes each URL and returns, per series name, its sample lines.
func gatherSeries(t *testing.T, urls ...string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, u := range urls {
		resp, err := http.Get(u)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, u)
		for _, line := range strings.Split(string(body), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name := line
			if i := strings.IndexAny(line, "{ "); i >= 0 {
				name = line[:i]
			}
			out[name] = append(out[name], line)
		}
	}
	// A histogram is named by its family too.
	for name := range out {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				out[base] = append(out[base], out[name]...)
			}
		}
	}
	return out
}

func hasLine(series map[string][]string, name, labels string) bool {
	for _, l := range series[name] {
		if strings.Contains(l, labels) {
			return true
		}
	}
	return false
}

func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	require.NotEmpty(t, out)
	return out
}

func ruleExprs(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var f struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &f))
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	require.NotEmpty(t, out)
	return out
}

var metricRef = regexp.MustCompile(`\b(?:imprun|temporal)_[a-zA-Z0-9_]+`)

// metricNames lists the series a PromQL expression names (ours and the Temporal SDK's).
func metricNames(expr string) []string {
	seen := map[string]bool{}
	for _, m := range metricRef.FindAllString(expr, -1) {
		seen[m] = true
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}
