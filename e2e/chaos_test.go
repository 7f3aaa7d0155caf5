package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/devissuer"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/testharness"
)

// TestChaos is the chaos suite (`make chaos`; skipped unless IMPRUN_CHAOS=1): N publishes, N
// credential changes and N subscription decisions go through two `cmd/api` processes while the
// `cmd/worker` process, an api replica and agents are killed (-9) and restarted, Postgres is
// stopped and started, and the Temporal dev server (persistent, its own) is killed and started
// on the same file and port. The client behaves like a real one: it retries network errors, 503
// and idempotency_in_flight with the same Idempotency-Key, alternating replicas. Then it waits
// for every accepted change to reach its end state and prints the figures; all five must be 0.
//
// IMPRUN_CHAOS_N (default 12) sets N; IMPRUN_CHAOS_SETTLE (default 3m) the settle deadline.
func TestChaos(t *testing.T) {
	if os.Getenv("IMPRUN_CHAOS") != "1" {
		t.Skip("the chaos suite runs with IMPRUN_CHAOS=1 (make chaos)")
	}
	n := envInt("IMPRUN_CHAOS_N", 12)
	settleDeadline := 3 * time.Minute
	if v := os.Getenv("IMPRUN_CHAOS_SETTLE"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err)
		settleDeadline = d
	}
	c := newChaosStack(t)
	c.setup(t)

	// The workload and the faults run side by side.
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The workload spreads over the fault schedule (about 85 s).
	pace := 85 * time.Second / time.Duration(n)
	tctx, stopTracker := context.WithCancel(context.Background())
	defer stopTracker()
	go c.tracker(tctx)
	var wg sync.WaitGroup
	for _, fn := range []func(context.Context, int, time.Duration){c.publishes, c.credentialChanges, c.decisions} {
		wg.Add(1)
		go func() { defer wg.Done(); fn(ctx, n, pace) }()
	}
	c.faults(t)
	wg.Wait()
	quiet := time.Now()
	t.Logf("workload and faults done after %s", quiet.Sub(start).Round(time.Second))

	// Settle: every accepted change reaches its end state.
	stopTracker()
	notSettled, lost, settle, slowest := c.settle(t, quiet, settleDeadline)
	twice := c.appliedTwice(t)
	twiceTotal := 0
	for _, v := range twice {
		twiceTotal += v
	}

	c.mu.Lock()
	bad := append([]string(nil), c.bad5xx...)
	statuses := map[int]int{}
	for k, v := range c.statuses {
		statuses[k] = v
	}
	netErrs, gaveUp := c.netErrors, append([]string(nil), c.gaveUp...)
	c.mu.Unlock()

	var out strings.Builder
	fmt.Fprintf(&out, "\nchaos: N=%d, %s of workload and faults, settle deadline %s\n", n, quiet.Sub(start).Round(time.Second), settleDeadline)
	fmt.Fprintf(&out, "  %-40s %d\n", "accepted changes lost", lost)
	fmt.Fprintf(&out, "  %-40s %d\n", "revisions/changes applied twice", twiceTotal)
	fmt.Fprintf(&out, "  %-40s %d\n", "5xx other than 503", len(bad))
	fmt.Fprintf(&out, "  %-40s %d\n", "changes not settled within the deadline", notSettled)
	fmt.Fprintf(&out, "  %-40s %s (slowest change: %s from its 2xx to its end state)\n", "time to settle (after the last fault)",
		settle.Round(100*time.Millisecond), slowest.Round(100*time.Millisecond))
	fmt.Fprintf(&out, "  applied twice, by what the data records:\n")
	keys := make([]string, 0, len(twice))
	for k := range twice {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&out, "    %-60s %d\n", k, twice[k])
	}
	c.mu.Lock()
	fmt.Fprintf(&out, "  accepted: publishes %d/%d, credential changes %d/%d, decisions %d/%d\n",
		len(c.pubs), n, c.credChanges, c.credAttempts, len(c.subs), n)
	fmt.Fprintf(&out, "  faults injected: %d (%s)\n", len(c.faultLog), strings.Join(c.faultLog, ", "))
	c.mu.Unlock()
	codes := make([]int, 0, len(statuses))
	for k := range statuses {
		codes = append(codes, k)
	}
	sort.Ints(codes)
	var parts []string
	for _, k := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", k, statuses[k]))
	}
	fmt.Fprintf(&out, "  responses: %s; network errors (retried) %d\n", strings.Join(parts, " "), netErrs)
	if len(gaveUp) > 0 {
		fmt.Fprintf(&out, "  requests given up (never answered, not counted as accepted): %d\n", len(gaveUp))
		for _, g := range gaveUp {
			fmt.Fprintf(&out, "    %s\n", g)
		}
	}
	for _, b := range bad {
		fmt.Fprintf(&out, "  5xx: %s\n", b)
	}
	fmt.Println(out.String())
	if lost != 0 || twiceTotal != 0 || len(bad) != 0 || notSettled != 0 {
		t.Fatalf("chaos: lost=%d applied_twice=%d 5xx=%d not_settled=%d (must all be 0)", lost, twiceTotal, len(bad), notSettled)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// chaosStack is the control plane as processes, plus the workload's bookkeeping.
type chaosStack struct {
	t        *testing.T
	pg       *testharness.PG
	temporal *testharness.TemporalServer
	dbURL    string
	db       *storetest.DB
	issuer   *devissuer.Issuer
	apiBin   string
	workBin  string
	agentBin string
	queue    string

	replicas [2]*chaosReplica
	worker   *testharness.Process
	agents   []*chaosAgent

	ops, owner, customer string // bearer tokens
	clusters             []string
	productID, gatewayID string
	openPubs, gatedPubs  []string // per cluster
	keysApp              string

	http *http.Client
	next atomic.Int64

	mu           sync.Mutex
	statuses     map[int]int
	bad5xx       []string
	netErrors    int
	gaveUp       []string
	faultLog     []string
	pubs         map[string]time.Time // accepted publish -> when
	creds        map[string]*chaosCred
	credChanges  int
	credAttempts int
	subs         map[string]*chaosSub
	items        []*tracked
}

func (c *chaosStack) track(name string, check func() int) *tracked {
	it := &tracked{name: name, accepted: time.Now(), check: check}
	c.mu.Lock()
	c.items = append(c.items, it)
	c.mu.Unlock()
	return it
}

type chaosReplica struct {
	name             string
	httpAddr, grpcAd string
	proc             *testharness.Process
}

type chaosAgent struct {
	name, dir string
	replica   int
	proc      *testharness.Process
}

// tracked is one accepted change on its way to its end state.
type tracked struct {
	name      string
	accepted  time.Time
	check     func() int // 1 at its end state, -1 ended otherwise, 0 on its way
	settledAt time.Time
	lostWhy   string
}

type chaosCred struct {
	revoked  bool // the revoke was accepted
	accepted time.Time
}

type chaosSub struct {
	approve  bool
	accepted time.Time
}

const chaosJWTSecret = "chaos-agent-jwt-secret-0123456789abcdef-xyz"

func newChaosStack(t *testing.T) *chaosStack {
	c := &chaosStack{t: t, statuses: map[int]int{}, pubs: map[string]time.Time{}, creds: map[string]*chaosCred{}, subs: map[string]*chaosSub{},
		http: &http.Client{Timeout: 20 * time.Second}, queue: "imprun-chaos"}
	c.pg = testharness.StartPostgres(t)
	c.dbURL = c.pg.NewDatabase(t)
	c.db = storetest.Open(t, c.dbURL)
	c.temporal = testharness.StartTemporalWith(t, filepath.Join(t.TempDir(), "temporal.db"))
	c.issuer = apitest.Issuer(t)
	c.apiBin = testharness.GoBuild(t, "./cmd/api")
	c.workBin = testharness.GoBuild(t, "./cmd/worker")
	c.agentBin = testharness.GoBuild(t, "./cmd/agent")
	for i := range c.replicas {
		c.replicas[i] = &chaosReplica{name: fmt.Sprintf("api-%d", i+1),
			httpAddr: fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t)), grpcAd: fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))}
		c.startReplica(t, i)
	}
	c.startWorker(t)
	tok := func(p apitest.Persona) string {
		p.Audience = apitest.Audience
		p.TTL = 3 * time.Hour
		s, err := c.issuer.Token(p)
		require.NoError(t, err)
		return s
	}
	c.ops, c.owner, c.customer = tok(opsP), tok(ownerP), tok(custP)
	return c
}

func (c *chaosStack) commonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IMPRUN_") { // the suite's own IMPRUN_CHAOS* would be refused as unknown keys
			env = append(env, kv)
		}
	}
	return append(env,
		"IMPRUN_DATABASE_URL="+c.dbURL,
		"IMPRUN_DATABASE_CONNECT_RETRY=120s",
		"IMPRUN_TEMPORAL_HOST_PORT="+c.temporal.HostPort(),
		"IMPRUN_TEMPORAL_TASK_QUEUE="+c.queue,
		"IMPRUN_TEMPORAL_CONNECT_RETRY=120s",
		"IMPRUN_LOG_LEVEL=info",
	)
}

func (c *chaosStack) startReplica(t *testing.T, i int) {
	r := c.replicas[i]
	cmd := exec.Command(c.apiBin, "serve")
	cmd.Env = append(c.commonEnv(),
		"IMPRUN_HTTP_ADDR="+r.httpAddr,
		"IMPRUN_GRPC_ADDR="+r.grpcAd,
		"IMPRUN_OIDC_ISSUER_URL="+c.issuer.URL(),
		"IMPRUN_AGENT_JWT_SECRET="+chaosJWTSecret,
		"IMPRUN_AGENT_HEARTBEAT_INTERVAL=1s",
		"IMPRUN_AGENT_MISSED_HEARTBEATS=3",
		"IMPRUN_AGENT_PRESENCE_FLUSH_INTERVAL=500ms",
		"IMPRUN_DEV_ALLOW_INSECURE_TRANSPORT=true",
	)
	r.proc = testharness.StartProcess(t, r.name, cmd)
	r.proc.WaitReady(t, 90*time.Second, func(ctx context.Context) error { return httpOK(ctx, "http://"+r.httpAddr+"/readyz") })
}

func (c *chaosStack) startWorker(t *testing.T) {
	cmd := exec.Command(c.workBin)
	cmd.Env = append(c.commonEnv(), "IMPRUN_WORKER_HTTP_ADDR=127.0.0.1:0")
	c.worker = testharness.StartProcess(t, "worker", cmd)
}

func (c *chaosStack) startAgent(t *testing.T, a *chaosAgent, token string) {
	r := c.replicas[a.replica]
	args := []string{"run", "--insecure", "--data-plane", "files", "--state-dir", a.dir, "--name", a.name,
		"--server", r.grpcAd, "--api", "http://" + r.httpAddr}
	if token != "" {
		args = append(args, "--registration-token", token)
	}
	cmd := exec.Command(c.agentBin, args...)
	cmd.Env = c.commonEnv()
	a.proc = testharness.StartProcess(t, a.name, cmd)
}

func httpOK(ctx context.Context, url string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return nil
}

// call sends one logical request as a real client would: on a network error, a 503 or a 409
// idempotency_in_flight it waits and sends it again (to the other replica, as a load balancer
// would) with the same Idempotency-Key, for up to two minutes. Every status is counted; a 5xx
// other than 503 is recorded with its body.
func (c *chaosStack) call(token, method, path string, body any, key string) (int, []byte) {
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	deadline := time.Now().Add(2 * time.Minute)
	backoff := 200 * time.Millisecond
	for {
		r := c.replicas[c.next.Add(1)%2]
		var rd io.Reader
		if raw != nil {
			rd = bytes.NewReader(raw)
		}
		req, _ := http.NewRequest(method, "http://"+r.httpAddr+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		if raw != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := c.http.Do(req)
		retry := false
		var status int
		var respBody []byte
		if err != nil {
			c.mu.Lock()
			c.netErrors++
			c.mu.Unlock()
			retry = true
		} else {
			respBody, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
			c.mu.Lock()
			c.statuses[status]++
			if status >= 500 && status != http.StatusServiceUnavailable {
				c.bad5xx = append(c.bad5xx, fmt.Sprintf("%s %s via %s -> %d %s", method, path, r.name, status, respBody))
			}
			c.mu.Unlock()
			retry = status == http.StatusServiceUnavailable ||
				(status == http.StatusConflict && bytes.Contains(respBody, []byte(`"idempotency_in_flight"`)))
		}
		if !retry {
			return status, respBody
		}
		if time.Now().After(deadline) {
			c.mu.Lock()
			c.gaveUp = append(c.gaveUp, fmt.Sprintf("%s %s key=%s: last %d %s %v", method, path, key, status, respBody, err))
			c.mu.Unlock()
			return 0, nil
		}
		time.Sleep(backoff)
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// must is call for the setup: anything but want fails the test.
func (c *chaosStack) must(t *testing.T, token, method, path string, body any, want int) map[string]any {
	t.Helper()
	status, b := c.call(token, method, path, body, "setup-"+strconv.FormatInt(c.next.Add(1), 10))
	require.Equal(t, want, status, "%s %s: %s", method, path, b)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func (c *chaosStack) getJSON(token, path string, v any) bool {
	status, b := c.call(token, http.MethodGet, path, nil, "")
	return status == http.StatusOK && json.Unmarshal(b, v) == nil
}

// setup: a provider with one product, three clusters (two agents on the first, one on each
// other, spread over both replicas), on each cluster an open and a gated (approval required)
// publish, and a customer whose "keys" app subscribes to the three open ones.
func (c *chaosStack) setup(t *testing.T) {
	P := http.MethodPost
	tenant := c.must(t, c.ops, P, "/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email}, 201)["id"].(string)
	c.must(t, c.ops, P, "/v1/operator/tenants/"+tenant+"/domains", map[string]any{"domain": "example.com"}, 201)
	c.must(t, c.ops, P, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email}, 201)
	agentsPer := []int{2, 1, 1}
	for k, na := range agentsPer {
		id := c.must(t, c.ops, P, "/v1/operator/clusters", map[string]any{"name": fmt.Sprintf("chaos-%d", k), "region": "kr-central",
			"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}}, 201)["id"].(string)
		c.clusters = append(c.clusters, id)
		tok := c.must(t, c.ops, P, "/v1/operator/clusters/"+id+"/registration-tokens", map[string]any{"max_uses": 10}, 201)["token"].(string)
		for j := 0; j < na; j++ {
			a := &chaosAgent{name: fmt.Sprintf("agent-c%d-%d", k, j), dir: t.TempDir(), replica: len(c.agents) % 2}
			c.agents = append(c.agents, a)
			c.startAgent(t, a, tok)
		}
	}
	svc := c.must(t, c.owner, P, prov+"/api-services", map[string]any{"name": "payments", "version": "1.0.0", "status": "active"}, 201)["id"].(string)
	be := c.must(t, c.owner, P, prov+"/api-services/"+svc+"/backends", map[string]any{"name": "payments-be", "scheme": "http",
		"endpoints": []map[string]any{{"host": "payments.internal", "port": 8080}}}, 201)["id"].(string)
	c.must(t, c.owner, P, prov+"/api-services/"+svc+"/routes", map[string]any{"name": "charges",
		"paths": []map[string]any{{"type": "prefix", "value": "/charges"}}, "backend_refs": []map[string]any{{"backend_id": be, "weight": 100}}}, 201)
	c.gatewayID = c.must(t, c.owner, P, prov+"/gateways", map[string]any{"name": "edge", "gateway_class": "envoy-gateway",
		"listeners": []map[string]any{{"name": "http", "port": 80, "protocol": "HTTP"}}}, 201)["id"].(string)
	c.productID = c.must(t, c.owner, P, prov+"/products", map[string]any{"name": "Payments", "version": "1.0.0", "api_services": []string{svc}}, 201)["id"].(string)
	c.must(t, c.owner, P, prov+"/products/"+c.productID+"/activate", nil, 200)
	for k, cl := range c.clusters {
		c.openPubs = append(c.openPubs, c.must(t, c.owner, P, prov+"/product-publishes", c.pubBody(cl, fmt.Sprintf("open-%d.example.com", k), false), 201)["id"].(string))
		c.gatedPubs = append(c.gatedPubs, c.must(t, c.owner, P, prov+"/product-publishes", c.pubBody(cl, fmt.Sprintf("gated-%d.example.com", k), true), 201)["id"].(string))
	}
	for _, p := range append(append([]string(nil), c.openPubs...), c.gatedPubs...) {
		require.Eventually(t, func() bool { return c.publishSettled(p) == 1 }, 90*time.Second, 250*time.Millisecond, "setup publish %s never PUBLISHED", p)
	}
	c.keysApp = c.must(t, c.customer, P, "/v1/customer/apps", map[string]any{"name": "keys"}, 201)["id"].(string)
	for _, p := range c.openPubs {
		c.must(t, c.customer, P, "/v1/customer/subscriptions", map[string]any{"product_publish_id": p, "client_app_id": c.keysApp}, 201)
	}
	// The setup's requests are not part of the figures.
	c.mu.Lock()
	c.statuses, c.netErrors = map[int]int{}, 0
	c.mu.Unlock()
}

func (c *chaosStack) pubBody(cluster, host string, approval bool) map[string]any {
	return map[string]any{"product_id": c.productID, "cluster_id": cluster, "gateway_id": c.gatewayID,
		"environment": "prod", "hostname": host, "approval_required": approval}
}

// publishes creates n publishes, one every pace, over the clusters in turn.
func (c *chaosStack) publishes(ctx context.Context, n int, pace time.Duration) {
	for i := 0; i < n && ctx.Err() == nil; i++ {
		k := i % len(c.clusters)
		status, b := c.call(c.owner, http.MethodPost, prov+"/product-publishes",
			c.pubBody(c.clusters[k], fmt.Sprintf("p%d.example.com", i), false), fmt.Sprintf("chaos-pub-%d", i))
		var m map[string]any
		if status == http.StatusCreated && json.Unmarshal(b, &m) == nil {
			c.mu.Lock()
			id := m["id"].(string)
			c.pubs[id] = time.Now()
			c.mu.Unlock()
			c.track("publish "+id, func() int { return c.publishSettled(id) })
		} else if status != 0 {
			c.t.Logf("publish %d not accepted: %d %s", i, status, b)
		}
		time.Sleep(pace)
	}
}

// credentialChanges creates n keys on the keys app; two in three are revoked a moment later.
func (c *chaosStack) credentialChanges(ctx context.Context, n int, pace time.Duration) {
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c.mu.Lock()
		c.credAttempts++
		c.mu.Unlock()
		status, b := c.call(c.customer, http.MethodPost, "/v1/customer/apps/"+c.keysApp+"/credentials",
			map[string]any{"type": "api_key", "label": fmt.Sprintf("k%d", i)}, fmt.Sprintf("chaos-cred-%d", i))
		var m map[string]any
		if status != http.StatusCreated || json.Unmarshal(b, &m) != nil {
			if status != 0 {
				c.t.Logf("credential %d not accepted: %d %s", i, status, b)
			}
			time.Sleep(pace)
			continue
		}
		id := m["id"].(string)
		cr := &chaosCred{accepted: time.Now()}
		c.mu.Lock()
		c.creds[id] = cr
		c.credChanges++
		c.mu.Unlock()
		it := c.track("credential "+id, func() int {
			c.mu.Lock()
			cp := *cr
			c.mu.Unlock()
			return c.credSettled(id, &cp)
		})
		time.Sleep(pace / 2)
		if i%3 != 0 {
			c.mu.Lock()
			c.credAttempts++
			c.mu.Unlock()
			status, b = c.call(c.customer, http.MethodPost, "/v1/customer/credentials/"+id+"/revoke", nil, fmt.Sprintf("chaos-revoke-%d", i))
			if status == http.StatusOK {
				c.mu.Lock()
				cr.revoked, cr.accepted = true, time.Now()
				it.name, it.accepted, it.settledAt, it.lostWhy = "credential revocation "+id, time.Now(), time.Time{}, ""
				c.credChanges++
				c.mu.Unlock()
			} else if status != 0 {
				c.t.Logf("revoke %d not accepted: %d %s", i, status, b)
			}
		}
		time.Sleep(pace / 2)
	}
}

// decisions: an app per decision subscribes to a gated publish (pending), and the provider
// approves (even) or rejects (odd) it.
func (c *chaosStack) decisions(ctx context.Context, n int, pace time.Duration) {
	for i := 0; i < n && ctx.Err() == nil; i++ {
		status, b := c.call(c.customer, http.MethodPost, "/v1/customer/apps", map[string]any{"name": fmt.Sprintf("app-%d", i)}, fmt.Sprintf("chaos-app-%d", i))
		var app, sub map[string]any
		if status != http.StatusCreated || json.Unmarshal(b, &app) != nil {
			c.t.Logf("app %d: %d %s", i, status, b)
			time.Sleep(pace)
			continue
		}
		status, b = c.call(c.customer, http.MethodPost, "/v1/customer/subscriptions",
			map[string]any{"product_publish_id": c.gatedPubs[i%len(c.gatedPubs)], "client_app_id": app["id"]}, fmt.Sprintf("chaos-sub-%d", i))
		if status != http.StatusCreated || json.Unmarshal(b, &sub) != nil {
			c.t.Logf("subscription %d: %d %s", i, status, b)
			time.Sleep(pace)
			continue
		}
		time.Sleep(pace / 2)
		id := sub["id"].(string)
		approve := i%2 == 0
		body := map[string]any{"reason": "chaos"}
		sig := "reject"
		if approve {
			sig = "approve"
		}
		status, b = c.call(c.owner, http.MethodPost, prov+"/subscriptions/"+id+"/"+sig, body, fmt.Sprintf("chaos-dec-%d", i))
		if status == http.StatusOK || status == http.StatusAccepted {
			c.mu.Lock()
			cs := &chaosSub{approve: approve, accepted: time.Now()}
			c.subs[id] = cs
			c.mu.Unlock()
			c.track("subscription decision "+id, func() int { return c.subSettled(id, cs) })
		} else if status != 0 {
			c.t.Logf("decision %d not accepted: %d %s", i, status, b)
		}
		time.Sleep(pace / 2)
	}
}

func (c *chaosStack) fault(name string) {
	c.mu.Lock()
	c.faultLog = append(c.faultLog, name)
	c.mu.Unlock()
	c.t.Logf("fault: %s", name)
}

// faults runs the fault schedule: each fault, then a pause in which the workload goes on.
func (c *chaosStack) faults(t *testing.T) {
	gap := 7 * time.Second
	down := 3 * time.Second
	time.Sleep(gap)
	c.fault("kill -9 worker")
	c.worker.Kill()
	time.Sleep(down)
	c.startWorker(t)

	time.Sleep(gap)
	c.fault("kill -9 api-1")
	c.replicas[0].proc.Kill()
	time.Sleep(down)
	c.startReplica(t, 0)

	time.Sleep(gap)
	c.fault("kill -9 agent-c0-0, agent-c1-0")
	for _, a := range []*chaosAgent{c.agents[0], c.agents[2]} {
		a.proc.Kill()
	}
	time.Sleep(down)
	for _, a := range []*chaosAgent{c.agents[0], c.agents[2]} {
		c.startAgent(t, a, "")
	}

	time.Sleep(gap)
	c.fault("stop Postgres 5s")
	c.pg.Stop()
	time.Sleep(5 * time.Second)
	c.pg.Start()

	time.Sleep(gap)
	c.fault("restart Temporal")
	c.temporal.Restart(t)

	time.Sleep(gap)
	c.fault("kill -9 worker and api-2 together")
	c.worker.Kill()
	c.replicas[1].proc.Kill()
	time.Sleep(down)
	c.startWorker(t)
	c.startReplica(t, 1)

	time.Sleep(gap)
	c.fault("kill -9 agent-c0-1, agent-c2-0")
	for _, a := range []*chaosAgent{c.agents[1], c.agents[3]} {
		a.proc.Kill()
	}
	time.Sleep(down)
	for _, a := range []*chaosAgent{c.agents[1], c.agents[3]} {
		c.startAgent(t, a, "")
	}
}

// publishSettled: 1 when PUBLISHED with no run in flight, -1 when it ended otherwise
// (FAILED, WITHDRAWN), 0 while on its way.
func (c *chaosStack) publishSettled(id string) int {
	var d publishDetail
	if !c.getJSON(c.owner, prov+"/product-publishes/"+id, &d) {
		return 0
	}
	switch {
	case d.Status == models.PublishPublished && d.WorkflowID == nil:
		return 1
	case d.Status == models.PublishFailed || d.Status == models.PublishWithdrawn:
		return -1
	}
	return 0
}

// credSettled: a kept key is confirmed upsert on every cluster and usable in every agent's
// credentials.json; a revoked one has revocation_confirmed, every rollout row a confirmed revoke
// of its version (a key revoked before any cluster got it has none), and no agent holds it
// unrevoked.
func (c *chaosStack) credSettled(id string, cr *chaosCred) int {
	var d credentialDetail
	if !c.getJSON(c.customer, "/v1/customer/credentials/"+id, &d) {
		return 0
	}
	held := c.agentsHolding(id)
	if cr.revoked {
		for _, r := range d.Rollout {
			if r.Action != models.RolloutRevoke || r.Status != models.RolloutConfirmed || r.Version != d.Version {
				return 0
			}
		}
		if d.RevocationConfirmed && held == 0 {
			return 1
		}
		return 0
	}
	// Not active while the client has not yet been told its revoke was accepted: undecided
	// until then (a kept key that is not active never settles and counts as lost).
	if allConfirmed(d, models.RolloutUpsert, len(c.clusters)) && held == len(c.agents) {
		return 1
	}
	return 0
}

// agentsHolding counts the agents whose state directory holds credential id unrevoked.
func (c *chaosStack) agentsHolding(id string) int {
	n := 0
	for _, a := range c.agents {
		b, err := os.ReadFile(filepath.Join(a.dir, "credentials.json"))
		if err != nil {
			continue
		}
		var f struct {
			Credentials []agent.Credential `json:"credentials"`
		}
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		for _, cr := range f.Credentials {
			if cr.ID == id && !cr.Revoked {
				n++
			}
		}
	}
	return n
}

func (c *chaosStack) subSettled(id string, s *chaosSub) int {
	var d subscription
	if !c.getJSON(c.owner, prov+"/subscriptions/"+id, &d) {
		return 0
	}
	want := models.SubscriptionRejected
	if s.approve {
		want = models.SubscriptionActive
	}
	switch {
	case d.Status == want:
		return 1
	case d.Status == models.SubscriptionPending:
		return 0
	}
	return -1
}

// tracker polls, once a second, every accepted change not yet at its end state and notes
// when it got there, until ctx ends.
func (c *chaosStack) tracker(ctx context.Context) {
	for ctx.Err() == nil {
		c.pollOnce()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// pollOnce checks the pending changes; it returns how many are still on their way.
func (c *chaosStack) pollOnce() int {
	c.mu.Lock()
	items := append([]*tracked(nil), c.items...)
	c.mu.Unlock()
	pending := 0
	for _, it := range items {
		c.mu.Lock()
		done := !it.settledAt.IsZero() || it.lostWhy != ""
		c.mu.Unlock()
		if done {
			continue
		}
		st := it.check()
		c.mu.Lock()
		switch {
		case st == 1 && it.settledAt.IsZero():
			it.settledAt = time.Now()
		case st == -1:
			it.lostWhy = "ended in another state"
		case st == 0:
			pending++
		}
		c.mu.Unlock()
	}
	return pending
}

// settle waits for every accepted change to reach its end state. notSettled counts those not
// there within deadline after quiet; lost those still not there by twice the deadline, or that
// ended in another state. settle is how long after quiet the last one got there; slowest is the
// longest time from a change's acceptance to its end state.
func (c *chaosStack) settle(t *testing.T, quiet time.Time, deadline time.Duration) (notSettled, lost int, settle, slowest time.Duration) {
	for {
		pending := c.pollOnce()
		if pending == 0 {
			break
		}
		if time.Since(quiet) > deadline && notSettled == 0 {
			notSettled = pending
		}
		if time.Since(quiet) > 2*deadline {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range c.items {
		switch {
		case it.lostWhy != "":
			t.Logf("LOST: %s %s", it.name, it.lostWhy)
			lost++
		case it.settledAt.IsZero():
			t.Logf("LOST: %s never reached its end state", it.name)
			lost++
		default:
			if d := it.settledAt.Sub(quiet); d > settle {
				settle = d
			}
			if d := it.settledAt.Sub(it.accepted); d > slowest {
				slowest = d
			}
			if it.settledAt.Sub(quiet) > deadline {
				t.Logf("not settled within %s: %s", deadline, it.name)
			}
		}
	}
	return notSettled, lost, settle, slowest
}

// appliedTwice reads what the data records: per publish revision, more than one
// revision_frozen, published or per-agent agent_result event, or a publish requested once that
// is past revision 1; per credential, a version above what its accepted changes make (create 1,
// revoke 2); per decided subscription, more than one audit entry of the decision.
func (c *chaosStack) appliedTwice(t *testing.T) map[string]int {
	c.mu.Lock()
	ids := make([]string, 0, len(c.pubs))
	for id := range c.pubs {
		ids = append(ids, id)
	}
	creds := map[string]*chaosCred{}
	for id, cr := range c.creds {
		creds[id] = cr
	}
	subs := map[string]*chaosSub{}
	for id, s := range c.subs {
		subs[id] = s
	}
	c.mu.Unlock()
	out, err := c.db.AppliedTwice(context.Background(), ids, 1)
	require.NoError(t, err)
	out["credential versions above their accepted changes"] = 0
	for id, cr := range creds {
		var d credentialDetail
		if !c.getJSON(c.customer, "/v1/customer/credentials/"+id, &d) {
			continue
		}
		want := int64(1)
		if cr.revoked {
			want = 2
		}
		if d.Version > want {
			t.Logf("credential %s at version %d, want %d", id, d.Version, want)
			out["credential versions above their accepted changes"]++
		}
	}
	out["subscription decisions audited more than once"] = 0
	for id, s := range subs {
		action := "subscription.reject"
		if s.approve {
			action = "subscription.approve"
		}
		n, err := c.db.CountAuditOn(action, id)
		require.NoError(t, err)
		if n > 1 {
			t.Logf("subscription %s: %d %s audit entries", id, n, action)
			out["subscription decisions audited more than once"]++
		}
	}
	return out
}
