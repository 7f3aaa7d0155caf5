package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/cmd/imprunctl/ctl"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
)

// imprunctl is one person's shell: a config directory of their own and the stack's API.
type imprunctl struct {
	t   *testing.T
	env map[string]string
}

func newImprunctl(t *testing.T, s *stack) *imprunctl {
	return &imprunctl{t: t, env: map[string]string{"IMPRUN_SERVER": s.env.URL, "XDG_CONFIG_HOME": t.TempDir()}}
}

// run executes imprunctl args and returns the exit code, stdout and stderr.
func (c *imprunctl) run(args ...string) (int, string, string) {
	var out, errb apitest.LockedBuffer
	code := c.runTo(&out, &errb, args...)
	c.t.Logf("imprunctl %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

func (c *imprunctl) runTo(out, errb *apitest.LockedBuffer, args ...string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return ctl.Run(ctx, args, ctl.IO{Stdout: out, Stderr: errb, Getenv: func(k string) string { return c.env[k] }})
}

// ok runs args, requires exit 0 and returns stdout.
func (c *imprunctl) ok(args ...string) string {
	c.t.Helper()
	code, out, errs := c.run(args...)
	require.Equal(c.t, 0, code, "imprunctl %v: %s%s", args, out, errs)
	return out
}

const catalogV1 = `
gateways:
  - name: edge-orders
    gateway_class: envoy-gateway
    status: active
    listeners:
      - {name: http, port: 80, protocol: HTTP}
services:
  - name: orders
    version: 1.0.0
    status: active
    labels: {team: shop}
    backends:
      - name: orders-be
        scheme: http
        endpoints: [{host: orders.internal, port: 8080}]
    routes:
      - name: list
        paths: [{type: prefix, value: /orders}]
        methods: [GET]
        backend_refs: [{backend: orders-be, weight: 100}]
    policies:
      - name: cors
        type: cors
        spec: {allow_origins: ["https://shop.example.com"], allow_methods: [GET]}
      - name: list-limit
        route: list
        type: rate-limit
        spec: {requests_per_unit: 100, unit: minute}
policies:
  - name: deny-bad
    type: ip-deny
    spec: {cidrs: [203.0.113.0/24]}
products:
  - name: Orders
    version: 1.0.0
    description: Orders API
    api_services: [orders]
    status: active
    plans:
      - name: basic
        rate_limit: {requests: 10, period: minute}
`

func TestImprunctl(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	owner, ops := newImprunctl(t, s), newImprunctl(t, s)

	// Login with a bearer token: stored 0600 under XDG_CONFIG_HOME, used by later commands.
	require.Contains(t, owner.ok("login", "--token", s.env.Token(ownerP)), "as owner@acme.test")
	cfg := filepath.Join(owner.env["XDG_CONFIG_HOME"], "imprunctl", "config.yaml")
	fi, err := os.Stat(cfg)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Contains(t, owner.ok("whoami"), "acme")

	// Login with the dev issuer: imprunctl signs with the issuer's key, the API verifies it.
	keyFile := filepath.Join(t.TempDir(), "dev-issuer.json")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Bytes: x509.MarshalPKCS1PrivateKey(s.env.Issuer.Key())}), 0o600))
	ops.ok("login", "--dev-issuer", "--dev-issuer-key", keyFile, "--issuer-url", s.env.Issuer.URL(),
		"--email", opsP.Email, "--role", models.PlatformOperator)
	out := ops.ok("get", "clusters")
	require.Contains(t, out, "kr-prod-1")
	require.Contains(t, out, "CONNECTED")
	var cluster map[string]any
	require.NoError(t, json.Unmarshal([]byte(ops.ok("describe", "cluster", "kr-prod-1", "-o", "json")), &cluster))
	require.Equal(t, s.clusterID, cluster["id"])
	require.Contains(t, ops.ok("get", "clusters", "-o", "yaml"), "name: kr-prod-1")
	// A token of nobody is refused with the API's words and exit 1.
	code, _, errs := owner.run("get", "clusters", "--token", "not-a-token")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "401")

	// The catalog the publish below uses.
	file := filepath.Join(t.TempDir(), "catalog.yaml")
	require.NoError(t, os.WriteFile(file, []byte(catalogV1), 0o644))
	owner.ok("apply", "-f", file)
	require.Equal(t, "no changes\n", owner.ok("diff", "-f", file))

	// publish follows the workflow to PUBLISHED.
	dir := t.TempDir()
	ra := s.startAgent(t, dir, s.token(t))
	agentID := ra.identity(t).AgentID
	out = owner.ok("publish", "--product", "Orders", "--cluster", s.clusterID, "--gateway", "edge-orders",
		"--hostname", "orders.example.com", "--approval-required", "--poll", "100ms")
	require.Contains(t, out, "PUBLISHED")
	var pubs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(owner.ok("get", "publishes", "-o", "json")), &pubs))
	require.Len(t, pubs, 1)
	pubID := pubs[0]["id"].(string)
	require.Equal(t, "PUBLISHED", pubs[0]["status"])
	require.Contains(t, owner.ok("describe", "publish", pubID), "orders.example.com")
	require.Contains(t, ops.ok("get", "agents", "--cluster", "kr-prod-1"), "connected")
	require.Contains(t, ops.ok("describe", "agent", agentID), "kr-prod-1")

	// A customer subscribes; approval is required, so it waits until the provider approves.
	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	cust := s.env.As(custP)
	appID := created(t, cust, "/v1/customer/apps", map[string]any{"name": "shop"})["id"].(string)
	subID := created(t, cust, "/v1/customer/subscriptions", map[string]any{"product_publish_id": pubID, "client_app_id": appID})["id"].(string)
	require.Eventually(t, func() bool {
		_, out, _ := owner.run("get", "subscriptions", "--status", "pending")
		return strings.Contains(out, subID)
	}, 30*time.Second, 200*time.Millisecond)
	require.Contains(t, owner.ok("approve", "subscription", subID, "--reason", "known customer"), subID)
	require.Eventually(t, func() bool {
		var sub struct{ Status string }
		_, out, _ := owner.run("describe", "subscription", subID, "-o", "json")
		return json.Unmarshal([]byte(out), &sub) == nil && sub.Status == models.SubscriptionActive
	}, 30*time.Second, 200*time.Millisecond)
	// reject of a decided subscription is the API's 409, exit 1.
	code, _, errs = owner.run("reject", subID, "--reason", "too late")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "409")

	// The customer sees the subscription and its credentials.
	customer := newImprunctl(t, s)
	customer.ok("login", "--token", s.env.Token(custP))
	require.Contains(t, customer.ok("get", "subscriptions"), subID)
	credID := created(t, cust, "/v1/customer/apps/"+appID+"/credentials", map[string]any{"type": "api_key", "label": "prod"})["id"].(string)
	require.Contains(t, customer.ok("get", "credentials"), credID)
	require.Contains(t, customer.ok("describe", "credential", credID), "prod")

	// withdraw while the cluster's only agent is offline: the progress names the agent, and the
	// command follows the run to WITHDRAWN once the agent is back.
	ra.stop()
	s.waitAgent(t, agentID, models.AgentDisconnected)
	var wout, werr apitest.LockedBuffer
	done := make(chan int, 1)
	go func() { done <- owner.runTo(&wout, &werr, "withdraw", pubID, "--reason", "moving", "--poll", "100ms") }()
	require.Eventually(t, func() bool { return strings.Contains(werr.String(), "offline:") }, 30*time.Second, 100*time.Millisecond,
		"progress should name the offline agent: %s", werr.String())
	assert.Contains(t, werr.String(), "waiting for an agent of cluster kr-prod-1")
	ra = s.startAgent(t, dir, "")
	select {
	case code := <-done:
		t.Logf("withdraw: %s%s", wout.String(), werr.String())
		require.Equal(t, 0, code)
		require.Contains(t, wout.String(), "WITHDRAWN")
	case <-time.After(90 * time.Second):
		t.Fatalf("withdraw never finished: %s", werr.String())
	}

	// While the agent is away, a publish whose deadline passes ends FAILED: exit 1, with the reason.
	ra.stop()
	s.waitAgent(t, agentID, models.AgentDisconnected)
	code, out, errs = owner.run("publish", "--product", "Orders", "--cluster", s.clusterID, "--gateway", "edge-orders",
		"--hostname", "late.example.com", "--environment", "stage", "--deadline", "10s", "--poll", "200ms")
	require.Equal(t, 1, code)
	require.Contains(t, out, "FAILED")
	require.Contains(t, errs, "offline:")
	require.Contains(t, errs, "not PUBLISHED")

	// Publish the first one again (revision 2) while the agent is away: the same progress, then
	// PUBLISHED once it is back.
	var pout, perr apitest.LockedBuffer
	go func() { done <- owner.runTo(&pout, &perr, "publish", pubID, "--poll", "100ms") }()
	require.Eventually(t, func() bool { return strings.Contains(perr.String(), "offline:") }, 30*time.Second, 100*time.Millisecond,
		"progress should name the offline agent: %s", perr.String())
	s.startAgent(t, dir, "")
	select {
	case code := <-done:
		t.Logf("publish: %s%s", pout.String(), perr.String())
		require.Equal(t, 0, code)
		require.Contains(t, pout.String(), "PUBLISHED (revision 2)")
	case <-time.After(90 * time.Second):
		t.Fatalf("publish never finished: %s", perr.String())
	}
}

// The catalog needs no Temporal: apply and diff against the real API and Postgres.
func TestImprunctlApplyDiff(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{})
	ops := env.As(opsP)
	tenant := created(t, ops, "/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})["id"].(string)
	created(t, ops, "/v1/operator/tenants/"+tenant+"/domains", map[string]any{"domain": "example.com"})
	api := env.As(ownerP)
	// Something the file does not name, which only --prune touches.
	created(t, api, prov+"/api-services", map[string]any{"name": "payments", "version": "1.0.0"})
	created(t, api, prov+"/products", map[string]any{"name": "Payments", "version": "1.0.0"})
	owner := &imprunctl{t: t, env: map[string]string{"IMPRUN_SERVER": env.URL, "XDG_CONFIG_HOME": t.TempDir(), "IMPRUN_TOKEN": env.Token(ownerP)}}

	// apply / diff: pending changes are exit 2, applying twice is a no-op.
	file := filepath.Join(t.TempDir(), "catalog.yaml")
	require.NoError(t, os.WriteFile(file, []byte(catalogV1), 0o644))
	code, out, _ := owner.run("diff", "-f", file)
	require.Equal(t, ctl.ExitChanges, code)
	require.Contains(t, out, "+ service orders / route list")
	code, _, _ = owner.run("apply", "-f", file, "--dry-run")
	require.Equal(t, ctl.ExitChanges, code)
	out = owner.ok("apply", "-f", file)
	require.Contains(t, out, "+ product Orders / plan basic")
	require.Contains(t, out, "applied")
	require.Equal(t, "no changes\n", owner.ok("apply", "-f", file), "applying the same file again changes nothing")
	require.Equal(t, "no changes\n", owner.ok("diff", "-f", file))
	// Lists are read whole: with one item a page, every list follows next_cursor.
	require.Equal(t, "no changes\n", owner.ok("diff", "-f", file, "--page-size", "1"))
	// What apply made is there, through the API itself.
	r := api.Get(prov + "/products")
	require.Contains(t, string(r.Body), `"status":"active"`)

	// A changed route shows as a readable diff, and applies.
	changed := strings.Replace(catalogV1, "value: /orders}", "value: /v2/orders}", 1)
	require.NoError(t, os.WriteFile(file, []byte(changed), 0o644))
	code, out, _ = owner.run("diff", "-f", file)
	require.Equal(t, ctl.ExitChanges, code)
	require.Contains(t, out, "~ service orders / route list")
	require.Contains(t, out, `paths: [{"type":"prefix","value":"/orders"}] => [{"type":"prefix","value":"/v2/orders"}]`)
	require.Contains(t, out, "0 to create, 1 to change, 0 to delete")
	owner.ok("apply", "-f", file)
	require.Equal(t, "no changes\n", owner.ok("diff", "-f", file))

	// --prune: what the file does not name (the stack's own payments catalog) would go.
	code, out, _ = owner.run("diff", "-f", file, "--prune", "--page-size", "1")
	require.Equal(t, ctl.ExitChanges, code)
	require.Contains(t, out, "- service payments")
	require.Contains(t, out, "- product Payments")

	// A bad file is exit 1 with the reason.
	require.NoError(t, os.WriteFile(file+".bad", []byte("services:\n  - version: 1.0.0\n"), 0o644))
	code, _, errs := owner.run("apply", "-f", file+".bad")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "without a name")

	// --prune deletes it, and then there is nothing left to do.
	out = owner.ok("apply", "-f", file, "--prune")
	require.Contains(t, out, "0 to create, 0 to change, 2 to delete")
	require.Equal(t, "no changes\n", owner.ok("diff", "-f", file, "--prune"))
	require.Equal(t, http.StatusOK, api.Get(prov+"/api-services").Status)
	require.NotContains(t, string(api.Get(prov+"/api-services").Body), `"payments"`)
}
