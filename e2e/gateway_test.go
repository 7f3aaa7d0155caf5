package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/agent/nginx"
	"github.com/imprun/imprun-server/egress"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

// echoBackend is a real HTTP backend behind the gateway: it answers with its name and the
// request headers it received.
type echoBackend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

type echoAnswer struct {
	Backend string              `json:"backend"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
}

func newEchoBackend(t testing.TB, name string) *echoBackend {
	t.Helper()
	b := &echoBackend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoAnswer{Backend: name, Path: r.URL.Path, Headers: r.Header})
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *echoBackend) endpoint() map[string]any {
	_, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return map[string]any{"host": "127.0.0.1", "port": p}
}

// gatewayAgent is an in-process agent with an nginx data plane on loopback ports.
type gatewayAgent struct {
	*runningAgent
	addr string // where nginx serves the template's port 80
}

func (s *stack) nginxConfig(t testing.TB, dir, addr string) agent.Config {
	loopback, err := egress.Parse([]string{"127.0.0.0/8"}, nil)
	require.NoError(t, err)
	return agent.Config{Render: agent.RenderOptions{Egress: loopback}, ServerAddr: s.env.Replica.Addr, APIBaseURL: s.env.URL, StateDir: dir,
		TransportCredentials: insecure.NewCredentials(), MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Logger: s.env.Log.With("component", "agent"), DataPlane: agent.DataPlaneNginx,
		VerifyListen: fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t)),
		Nginx:        agent.NginxConfig{Listen: map[int]string{80: addr}, WorkerProcesses: "1", ConfirmTimeout: 5 * time.Second}}
}

func (s *stack) startGatewayAgent(t testing.TB, dir, token, addr string) *gatewayAgent {
	t.Helper()
	return s.startGatewayAgentNamed(t, dir, token, addr, "")
}

// startGatewayAgentNamed is startGatewayAgent with the name the agent registers with.
func (s *stack) startGatewayAgentNamed(t testing.TB, dir, token, addr, name string) *gatewayAgent {
	t.Helper()
	cfg := s.nginxConfig(t, dir, addr)
	cfg.RegistrationToken = token
	cfg.Name = name
	a, err := agent.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{dir: dir, agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	t.Cleanup(func() { stopNginx(t, dir) })
	return &gatewayAgent{runningAgent: ra, addr: addr}
}

// stopNginx stops the nginx an agent left running in its state directory (agents leave it
// serving when they exit).
func stopNginx(t testing.TB, stateDir string) {
	srv, err := nginx.New(nginx.Options{Dir: filepath.Join(stateDir, "nginx")})
	if err == nil {
		_ = srv.Stop(5 * time.Second)
	}
}

// gatewayResponse is one request through the gateway.
type gatewayResponse struct {
	Status  int
	Header  http.Header
	Body    []byte
	Backend *echoAnswer
}

func callGateway(t testing.TB, addr, host, path string, headers map[string]string) gatewayResponse {
	t.Helper()
	r, err := tryGateway(addr, host, path, headers)
	require.NoError(t, err)
	return r
}

func tryGateway(addr, host, path string, headers map[string]string) (gatewayResponse, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return gatewayResponse{}, err
	}
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return gatewayResponse{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := gatewayResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}
	var ans echoAnswer
	if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &ans) == nil && ans.Backend != "" {
		out.Backend = &ans
	}
	return out, nil
}

func key(k string) map[string]string { return map[string]string{"X-API-Key": k} }

// TestGatewayTraffic walks the data plane with a real nginx, a real backend and the real agent:
// publish -> 200 through nginx; no key or a bad key -> 401; a key of another publish -> 403;
// over the plan -> 429 with Retry-After; client-sent X-Imprun-* headers never reach the backend;
// revoke -> 401 within about a second; a publish nginx refuses fails alone while the other
// keeps serving; withdraw -> 404; rollback -> the old routing again.
func TestGatewayTraffic(t *testing.T) {
	t.Parallel()
	v1 := newEchoBackend(t, "v1")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: v1.endpoint()})
	plan := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Starter",
		"rate_limit": map[string]any{"requests": 5, "period": "minute"}})["id"].(string)

	addr := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	ga := s.startGatewayAgent(t, t.TempDir(), s.token(t), addr)
	ga.identity(t)
	host := "payments.example.com"
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "api-key"}))["id"].(string)
	d := s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	require.Contains(t, d.Results[0].Message, "nginx serves revision 1", "succeeded only once nginx loaded it")

	// Without a key, and with a wrong one: 401 from nginx, with the verifier's reason.
	r := callGateway(t, addr, host, "/charges", nil)
	require.Equal(t, http.StatusUnauthorized, r.Status, string(r.Body))
	require.Equal(t, "malformed_credential", r.Header.Get("X-Imprun-Deny-Reason"))
	require.NotEmpty(t, r.Header.Get("WWW-Authenticate"))
	r = callGateway(t, addr, host, "/charges", key("imp_nope0000.not-a-secret"))
	require.Equal(t, http.StatusUnauthorized, r.Status, string(r.Body))
	require.Zero(t, v1.hits.Load(), "nothing reached the backend")

	// A customer subscribes under the plan and makes a key.
	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	customer := s.env.As(custP)
	app := created(t, customer, "/v1/customer/apps", map[string]any{"name": "shop"})["id"].(string)
	rs := customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": pub, "client_app_id": app, "plan_id": plan})
	require.Equal(t, http.StatusCreated, rs.Status, string(rs.Body))
	cred := created(t, customer, "/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})
	credID, apiKey := cred["id"].(string), cred["key"].(string)

	var ok gatewayResponse
	require.Eventually(t, func() bool {
		ok = callGateway(t, addr, host, "/charges", map[string]string{"X-API-Key": apiKey,
			"X-Imprun-Plan-Id": "forged-plan", "X-Imprun-Credential-Id": "forged", "X-Imprun-Tenant": "someone-else"})
		return ok.Status == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "the key never worked at the gateway: %d %s", ok.Status, ok.Body)
	require.NotNil(t, ok.Backend)
	require.Equal(t, "v1", ok.Backend.Backend)
	hdr := http.Header(ok.Backend.Headers)
	require.Equal(t, credID, hdr.Get("X-Imprun-Credential-Id"), "the verifier's credential id, not the client's")
	require.Equal(t, plan, hdr.Get("X-Imprun-Plan-Id"), "the verifier's plan id, not the client's")
	require.Empty(t, hdr.Values("X-Imprun-Tenant"), "no client-sent X-Imprun-* header reaches the backend")

	// Over the plan's rate: 429 with Retry-After, never a 500.
	var over gatewayResponse
	for i := 0; i < 10; i++ {
		over = callGateway(t, addr, host, "/charges", key(apiKey))
		if over.Status != http.StatusOK {
			break
		}
	}
	require.Equal(t, http.StatusTooManyRequests, over.Status, string(over.Body))
	require.Equal(t, "rate_limited_per_minute", over.Header.Get("X-Imprun-Deny-Reason"))
	ra, err := strconv.Atoi(over.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After %q", over.Header.Get("Retry-After"))
	require.True(t, ra >= 1 && ra <= 60, "Retry-After %d", ra)

	// A second publish of the product on the same cluster: the key holds no grant for it.
	other := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "api-key",
		"environment": "stage", "hostname": "staging.example.com"}))["id"].(string)
	s.waitStatus(t, other, models.PublishPublished, 60*time.Second)
	r = callGateway(t, addr, "staging.example.com", "/charges", key(apiKey))
	require.Equal(t, http.StatusForbidden, r.Status, string(r.Body))
	require.Equal(t, "no_grant_for_publish", r.Header.Get("X-Imprun-Deny-Reason"))

	// A publish nginx refuses (its backend's host does not resolve) is FAILED with nginx's own
	// words, and the others keep serving.
	badSvc := created(t, s.owner, prov+"/api-services", map[string]any{"name": "ledger", "version": "1.0.0", "status": "active"})["id"].(string)
	badBe := created(t, s.owner, prov+"/api-services/"+badSvc+"/backends", map[string]any{"name": "ledger-be", "scheme": "http",
		"endpoints": []map[string]any{{"host": "ledger.does-not-exist.invalid", "port": 8080}}})["id"].(string)
	created(t, s.owner, prov+"/api-services/"+badSvc+"/routes", map[string]any{"name": "entries",
		"paths": []map[string]any{{"type": "prefix", "value": "/entries"}}, "backend_refs": []map[string]any{{"backend_id": badBe, "weight": 100}}})
	badProduct := created(t, s.owner, prov+"/products", map[string]any{"name": "Ledger", "version": "1.0.0", "api_services": []string{badSvc}})["id"].(string)
	require.Equal(t, http.StatusOK, s.owner.Post(prov+"/products/"+badProduct+"/activate", nil).Status)
	bad := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"product_id": badProduct, "hostname": "ledger.example.com"}))["id"].(string)
	db := s.waitStatus(t, bad, models.PublishFailed, 60*time.Second)
	require.Contains(t, db.StatusReason+db.Results[0].Message, "ledger.does-not-exist.invalid", "%+v", db)
	r = callGateway(t, addr, "staging.example.com", "/charges", nil)
	require.Equal(t, http.StatusUnauthorized, r.Status, "the other publish still serves (and still checks keys)")

	// Revoke: refused within about a second (the benchmark measures it).
	revokedAt := time.Now()
	rr := customer.Post("/v1/customer/credentials/"+credID+"/revoke", map[string]any{"reason": "leaked"})
	require.Equal(t, http.StatusOK, rr.Status, string(rr.Body))
	require.Eventually(t, func() bool {
		return callGateway(t, addr, host, "/charges", key(apiKey)).Status == http.StatusUnauthorized
	}, 10*time.Second, 20*time.Millisecond)
	t.Logf("revocation refused at the gateway after %s", time.Since(revokedAt).Round(time.Millisecond))

	// Withdraw: the host answers 404 from nginx's default server.
	require.Equal(t, http.StatusAccepted, s.owner.Post(prov+"/product-publishes/"+other+"/withdraw", map[string]any{"reason": "done"}).Status)
	s.waitStatus(t, other, models.PublishWithdrawn, 60*time.Second)
	r = callGateway(t, addr, "staging.example.com", "/charges", nil)
	require.Equal(t, http.StatusNotFound, r.Status, string(r.Body))
}

// TestGatewayRollback: a rollback serves the old routing again.
func TestGatewayRollback(t *testing.T) {
	t.Parallel()
	v1, v2 := newEchoBackend(t, "v1"), newEchoBackend(t, "v2")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: v1.endpoint()})
	addr := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	ga := s.startGatewayAgent(t, t.TempDir(), s.token(t), addr)
	ga.identity(t)
	host := "payments.example.com"
	pub := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	r := callGateway(t, addr, host, "/charges/1", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "v1", r.Backend.Backend)
	require.Equal(t, "/charges/1", r.Backend.Path)

	// The catalog can change only while nothing live uses it: withdraw (404), move the backend,
	// publish revision 2 (v2), roll back to revision 1 (v1 again).
	require.Equal(t, http.StatusAccepted, s.owner.Post(prov+"/product-publishes/"+pub+"/withdraw", map[string]any{"reason": "move"}).Status)
	s.waitStatus(t, pub, models.PublishWithdrawn, 60*time.Second)
	require.Equal(t, http.StatusNotFound, callGateway(t, addr, host, "/charges/1", nil).Status)
	rp := s.owner.Patch(prov+"/backends/"+s.backendID, map[string]any{"endpoints": []map[string]any{v2.endpoint()}})
	require.Equal(t, http.StatusOK, rp.Status, string(rp.Body))
	require.Equal(t, http.StatusAccepted, s.owner.Post(prov+"/product-publishes/"+pub+"/publish", nil).Status)
	s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	require.Equal(t, "v2", callGateway(t, addr, host, "/charges/1", nil).Backend.Backend)

	rb := s.owner.Post(prov+"/product-publishes/"+pub+"/rollback", map[string]any{"revision": 1})
	require.Equal(t, http.StatusAccepted, rb.Status, string(rb.Body))
	d := s.waitStatus(t, pub, models.PublishPublished, 60*time.Second)
	require.Equal(t, 3, d.CurrentRevision)
	r = callGateway(t, addr, host, "/charges/1", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "v1", r.Backend.Backend, "rollback routes to revision 1's backend again")
}

// agentProcess starts the real agent binary with an nginx data plane.
func agentProcess(t testing.TB, name string, args ...string) *testharness.Process {
	t.Helper()
	bin := testharness.GoBuild(t, "./cmd/agent")
	cmd := exec.Command(bin, append([]string{"run", "--insecure", "--data-plane", "nginx", "--nginx-workers", "1", "--egress-allow", "127.0.0.0/8"}, args...)...)
	return testharness.StartProcess(t, name, cmd)
}

// TestGatewayFailStatic: nginx keeps serving when the agent is killed; an agent restarted while
// the control plane is unreachable serves from its state directory at once, and a day's quota
// used before the restart stays used.
func TestGatewayFailStatic(t *testing.T) {
	t.Parallel()
	be := newEchoBackend(t, "v1")
	s := newStack(t, stackOptions{gatewayClass: "nginx", backend: be.endpoint()})
	plan := created(t, s.owner, prov+"/products/"+s.productID+"/plans", map[string]any{"name": "Trial",
		"rate_limit": map[string]any{"requests": 100, "period": "second"}, "quota": map[string]any{"requests": 3, "period": "day"}})["id"].(string)
	addr := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	verify := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	dir := t.TempDir()
	t.Cleanup(func() { stopNginx(t, dir) })
	common := []string{"--state-dir", dir, "--nginx-listen", "80=" + addr, "--verify-listen", verify}
	first := agentProcess(t, "agent-1", append(common, "--server", s.env.Replica.Addr, "--api", s.env.URL, "--registration-token", s.token(t))...)

	keyed := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "api-key"}))["id"].(string)
	open := created(t, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"environment": "stage", "hostname": "open.example.com"}))["id"].(string)
	s.waitStatus(t, keyed, models.PublishPublished, 60*time.Second)
	s.waitStatus(t, open, models.PublishPublished, 60*time.Second)

	created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	customer := s.env.As(custP)
	app := created(t, customer, "/v1/customer/apps", map[string]any{"name": "shop"})["id"].(string)
	rs := customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": keyed, "client_app_id": app, "plan_id": plan})
	require.Equal(t, http.StatusCreated, rs.Status, string(rs.Body))
	apiKey := created(t, customer, "/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})["key"].(string)

	host := "payments.example.com"
	require.Eventually(t, func() bool { return callGateway(t, addr, host, "/charges", key(apiKey)).Status == http.StatusOK },
		30*time.Second, 50*time.Millisecond, "the key never worked")
	for i := 0; i < 2; i++ {
		require.Equal(t, http.StatusOK, callGateway(t, addr, host, "/charges", key(apiKey)).Status, "request %d of the quota", i+2)
	}
	r := callGateway(t, addr, host, "/charges", key(apiKey))
	require.Equal(t, http.StatusTooManyRequests, r.Status, string(r.Body))
	require.Equal(t, "quota_exceeded", r.Header.Get("X-Imprun-Deny-Reason"))
	retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.True(t, retry > 0 && retry <= 86400, "Retry-After %d is the time to the next UTC day", retry)
	// Counts reach the state directory once a second; a crash loses at most that.
	time.Sleep(1500 * time.Millisecond)

	// The agent dies: nginx serves on. Open routes answer; keyed routes cannot be checked and
	// answer 503 with Retry-After (never a 500, never unchecked).
	first.Kill()
	require.Equal(t, http.StatusOK, callGateway(t, addr, "open.example.com", "/charges", nil).Status)
	r = callGateway(t, addr, host, "/charges", key(apiKey))
	require.Equal(t, http.StatusServiceUnavailable, r.Status, string(r.Body))
	require.NotEmpty(t, r.Header.Get("Retry-After"))

	// Restarted with no control plane to reach: it adopts nginx and serves from its state.
	dead := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))
	agentProcess(t, "agent-2", append(common, "--server", dead, "--api", "http://"+dead)...)
	require.Eventually(t, func() bool {
		r, err := tryGateway(addr, host, "/charges", key(apiKey))
		return err == nil && r.Status == http.StatusTooManyRequests
	}, 20*time.Second, 50*time.Millisecond, "the restarted agent never answered for the keyed route")
	r = callGateway(t, addr, host, "/charges", key(apiKey))
	require.Equal(t, "quota_exceeded", r.Header.Get("X-Imprun-Deny-Reason"), "the day's quota survived the restart")
	require.Equal(t, http.StatusOK, callGateway(t, addr, "open.example.com", "/charges", nil).Status)
	require.Equal(t, http.StatusUnauthorized, callGateway(t, addr, host, "/charges", key("imp_nope0000.x")).Status)
}

// TestEgressPolicy: a publish whose backend points at the instance metadata address, the
// loopback or the cluster's control services is refused with a 422 naming the backend and
// changes nothing; an operator can allow a range on one cluster (audited), never for another.
func TestEgressPolicy(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	before := s.count(t, "product_publishes")
	for host, why := range map[string]string{
		"169.254.169.254":                      "instance metadata",
		"127.0.0.1":                            "loopback",
		"fd00:ec2::254":                        "AWS instance metadata",
		"kubernetes.default.svc.cluster.local": "Kubernetes API",
		"imprun-agent.imprun-system.svc.cluster.local": "imprun-system namespace",
	} {
		r := s.owner.Patch(prov+"/backends/"+s.backendID, map[string]any{"endpoints": []map[string]any{{"host": host, "port": 8081}}})
		require.Equal(t, http.StatusOK, r.Status, string(r.Body))
		r = s.owner.Post(prov+"/product-publishes", s.publishBody(nil))
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s: %s", host, r.Body)
		p := r.Problem()
		require.Equal(t, "api_services", p.Errors[0].Field, host)
		require.Contains(t, p.Errors[0].Message, "backend payments-be: "+host)
		require.Contains(t, p.Errors[0].Message, why)
	}
	require.Equal(t, before, s.count(t, "product_publishes"), "nothing written")

	// The operator allows loopback on this cluster: the loopback backend publishes there.
	r := s.ops.Patch("/v1/operator/clusters/"+s.clusterID, map[string]any{"egress_allow": map[string]any{"cidrs": []string{"127.0.0.0/8"}}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, []any{"127.0.0.0/8"}, r.Map()["egress_allow"].(map[string]any)["cidrs"])
	r = s.owner.Patch(prov+"/backends/"+s.backendID, map[string]any{"endpoints": []map[string]any{{"host": "127.0.0.1", "port": 8081}}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, http.StatusCreated, s.owner.Post(prov+"/product-publishes", s.publishBody(map[string]any{"draft": true})).Status)
	summary := s.env.DB.LatestAuditSummary(t, "cluster.update")
	require.Contains(t, summary, "127.0.0.0/8", "who opened which range is audited")

	// Another cluster did not allow it.
	other := created(t, s.ops, "/v1/operator/clusters", map[string]any{"name": "kr-prod-2", "region": "kr-central",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}})["id"].(string)
	r = s.owner.Post(prov+"/product-publishes", s.publishBody(map[string]any{"cluster_id": other}))
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, string(r.Body))

	// Bad allowlists are refused.
	for _, bad := range []map[string]any{{"cidrs": []string{"not-a-range"}}, {"name_suffixes": []string{"*.example.com"}}} {
		r := s.ops.Patch("/v1/operator/clusters/"+s.clusterID, map[string]any{"egress_allow": bad})
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%v: %s", bad, r.Body)
	}
}

// catalog makes a product of one service (a route on /v1 with the given hostnames, a backend)
// and a gateway template for the tenant of c, and returns their ids.
func catalog(t *testing.T, c *apitest.Client, name string, routeHosts []string) (productID, gatewayID string) {
	t.Helper()
	svc := created(t, c, prov+"/api-services", map[string]any{"name": name, "version": "1.0.0", "status": "active"})["id"].(string)
	be := created(t, c, prov+"/api-services/"+svc+"/backends", map[string]any{"name": "orders-be", "scheme": "http",
		"endpoints": []map[string]any{{"host": "orders.internal", "port": 8080}}})["id"].(string)
	created(t, c, prov+"/api-services/"+svc+"/routes", map[string]any{"name": "orders", "hostnames": routeHosts,
		"paths": []map[string]any{{"type": "prefix", "value": "/v1"}}, "backend_refs": []map[string]any{{"backend_id": be, "weight": 100}}})
	gatewayID = created(t, c, prov+"/gateways", map[string]any{"name": name, "gateway_class": "envoy-gateway",
		"listeners": []map[string]any{{"name": "http", "port": 80, "protocol": "HTTP"}}})["id"].(string)
	productID = created(t, c, prov+"/products", map[string]any{"name": name, "version": "1.0.0", "api_services": []string{svc}})["id"].(string)
	require.Equal(t, http.StatusOK, c.Post(prov+"/products/"+productID+"/activate", nil).Status)
	return productID, gatewayID
}

// TestHostnameOwnership: two provider tenants on one cluster. Domains have one owner; a tenant
// publishes only names under its own domains (publish, route and wildcard hostnames); an exact
// hostname is served by one publish per cluster and port, and a conflict says nothing of whose.
func TestHostnameOwnership(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	ra := s.startAgent(t, t.TempDir(), s.token(t))
	ra.identity(t)
	initechID := created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "provider", "owner_email": "boss@initech.test"})["id"].(string)
	initech := s.env.As(apitest.Persona{Email: "boss@initech.test"})
	domains := "/v1/operator/tenants/" + initechID + "/domains"

	// Domains: one owner, nesting either way refused, no wildcards or bare TLDs.
	for _, d := range []string{"example.com", "api.example.com"} {
		r := s.ops.Post(domains, map[string]any{"domain": d})
		require.Equal(t, http.StatusConflict, r.Status, "%s: %s", d, r.Body)
		require.Equal(t, "domain_taken", r.Problem().Code)
		require.NotContains(t, string(r.Body), "acme", "the owner is not named")
	}
	for _, d := range []string{"com", "*.initech.test", "Not A Domain"} {
		require.Equal(t, http.StatusUnprocessableEntity, s.ops.Post(domains, map[string]any{"domain": d}).Status, d)
	}
	created(t, s.ops, domains, map[string]any{"domain": "initech.test"})
	require.Equal(t, http.StatusConflict, s.ops.Post("/v1/operator/tenants/"+s.tenantID+"/domains", map[string]any{"domain": "eu.initech.test"}).Status)

	// initech can't publish acme's names, as the publish hostname or through a route hostname.
	product, gateway := catalog(t, initech, "orders", nil)
	body := func(host string) map[string]any {
		return map[string]any{"product_id": product, "cluster_id": s.clusterID, "gateway_id": gateway, "environment": "prod", "hostname": host}
	}
	r := initech.Post(prov+"/product-publishes", body("payments.example.com"))
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, string(r.Body))
	require.Equal(t, "hostname", r.Problem().Errors[0].Field)
	wild, wildGW := catalog(t, initech, "wild", []string{"*.example.com"})
	pub := created(t, initech, prov+"/product-publishes", map[string]any{"product_id": wild, "cluster_id": s.clusterID, "gateway_id": wildGW,
		"environment": "stage", "hostname": "orders.initech.test"})["id"].(string)
	d := waitStatusAs(t, initech, pub, models.PublishFailed, 60*time.Second)
	require.Contains(t, d.StatusReason, "*.example.com is not under a domain the tenant owns")

	// acme serves payments.example.com; a second publish of that name on the cluster is a 409.
	acmePub := created(t, s.owner, prov+"/product-publishes", s.publishBody(nil))["id"].(string)
	s.waitStatus(t, acmePub, models.PublishPublished, 60*time.Second)
	r = s.owner.Post(prov+"/product-publishes", s.publishBody(map[string]any{"environment": "stage"}))
	require.Equal(t, http.StatusConflict, r.Status, string(r.Body))
	require.Equal(t, "hostname_taken", r.Problem().Code)

	// The domain moves to initech: while acme's publish is live the name stays acme's on this
	// cluster (409, naming no one); once acme withdraws, initech publishes it.
	var grants struct {
		Items []struct{ ID, Domain string } `json:"items"`
	}
	s.ops.Get("/v1/operator/tenants/" + s.tenantID + "/domains").JSON(&grants)
	require.Len(t, grants.Items, 1)
	require.Equal(t, http.StatusNoContent, s.ops.Delete("/v1/operator/tenants/"+s.tenantID+"/domains/"+grants.Items[0].ID).Status)
	created(t, s.ops, domains, map[string]any{"domain": "example.com"})
	r = initech.Post(prov+"/product-publishes", body("payments.example.com"))
	require.Equal(t, http.StatusConflict, r.Status, string(r.Body))
	require.NotContains(t, string(r.Body), "acme")
	require.Equal(t, http.StatusAccepted, s.owner.Post(prov+"/product-publishes/"+acmePub+"/withdraw", map[string]any{"reason": "moved"}).Status)
	s.waitStatus(t, acmePub, models.PublishWithdrawn, 60*time.Second)
	moved := created(t, initech, prov+"/product-publishes", body("payments.example.com"))["id"].(string)
	waitStatusAs(t, initech, moved, models.PublishPublished, 60*time.Second)
	audits := s.env.DB.CountAuditActions(t, "tenant.domain_add", "tenant.domain_remove")
	require.Equal(t, 4, audits, "every grant and removal is audited")
}
