// Package e2e holds the end-to-end tests: api (REST and agent gateway) + Temporal worker +
// the reference agent against the real Temporal dev server, Postgres and OIDC issuer.
package e2e

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

var (
	opsP   = apitest.Persona{Email: "ops@example.com", Roles: []string{models.PlatformOperator}}
	ownerP = apitest.Persona{Email: "owner@acme.test"}
	timing = &apitest.AgentTiming{HeartbeatInterval: time.Second, MissedHeartbeats: 3, FlushInterval: 200 * time.Millisecond}
)

const prov = "/v1/provider"

// stack is one control plane: api with its agent gateway, a worker, a provider tenant with a
// catalog (one active product with one service, a route and a backend), a cluster and a token.
type stack struct {
	env       *apitest.Env
	ops       *apitest.Client
	owner     *apitest.Client
	tenantID  string
	clusterID string
	productID string
	gatewayID string
	serviceID string
	backendID string
}

type stackOptions struct {
	gatewayClass string
	listener     map[string]any
	backend      map[string]any // the backend's endpoint (default payments.internal:8080)
	noWorker     bool
	// timing, when set, replaces the agents' heartbeat timing (timing by default).
	timing *apitest.AgentTiming
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	return newStackWith(t, o, apitest.Options{})
}

func newStackWith(t testing.TB, o stackOptions, eo apitest.Options) *stack {
	t.Helper()
	eo.WithTemporal, eo.Agents = true, timing
	if o.timing != nil {
		eo.Agents = o.timing
	}
	env := apitest.New(t, eo)
	s := &stack{env: env, ops: env.As(opsP), owner: env.As(ownerP)}
	if !o.noWorker {
		env.StartWorker(t)
	}
	s.tenantID = created(t, s.ops, "/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})["id"].(string)
	created(t, s.ops, "/v1/operator/tenants/"+s.tenantID+"/domains", map[string]any{"domain": "example.com"})
	cluster := map[string]any{"name": "kr-prod-1", "region": "kr-central",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}, {"name": "nginx"}}}}
	if o.backend != nil {
		// The tests' backends listen on loopback, which a cluster refuses unless it allows it.
		cluster["egress_allow"] = map[string]any{"cidrs": []string{"127.0.0.0/8"}}
	}
	s.clusterID = created(t, s.ops, "/v1/operator/clusters", cluster)["id"].(string)

	s.serviceID = created(t, s.owner, prov+"/api-services", map[string]any{"name": "payments", "version": "1.0.0", "status": "active"})["id"].(string)
	endpoint := o.backend
	if endpoint == nil {
		endpoint = map[string]any{"host": "payments.internal", "port": 8080}
	}
	s.backendID = created(t, s.owner, prov+"/api-services/"+s.serviceID+"/backends", map[string]any{"name": "payments-be", "scheme": "http",
		"endpoints": []map[string]any{endpoint}})["id"].(string)
	created(t, s.owner, prov+"/api-services/"+s.serviceID+"/routes", map[string]any{"name": "charges",
		"paths": []map[string]any{{"type": "prefix", "value": "/charges"}}, "backend_refs": []map[string]any{{"backend_id": s.backendID, "weight": 100}}})
	class := o.gatewayClass
	if class == "" {
		class = "envoy-gateway"
	}
	listener := o.listener
	if listener == nil {
		listener = map[string]any{"name": "http", "port": 80, "protocol": "HTTP"}
	}
	s.gatewayID = created(t, s.owner, prov+"/gateways", map[string]any{"name": "edge", "gateway_class": class,
		"listeners": []map[string]any{listener}})["id"].(string)
	s.productID = created(t, s.owner, prov+"/products", map[string]any{"name": "Payments", "version": "1.0.0",
		"api_services": []string{s.serviceID}})["id"].(string)
	r := s.owner.Post(prov+"/products/"+s.productID+"/activate", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	return s
}

func created(t testing.TB, c *apitest.Client, path string, body any) map[string]any {
	t.Helper()
	r := c.Post(path, body)
	require.Equal(t, http.StatusCreated, r.Status, "POST %s: %s", path, r.Body)
	return r.Map()
}

func (s *stack) token(t testing.TB) string {
	t.Helper()
	return created(t, s.ops, "/v1/operator/clusters/"+s.clusterID+"/registration-tokens", map[string]any{"max_uses": 10})["token"].(string)
}

func (s *stack) publishBody(extra map[string]any) map[string]any {
	b := map[string]any{"product_id": s.productID, "cluster_id": s.clusterID, "gateway_id": s.gatewayID,
		"environment": "prod", "hostname": "payments.example.com"}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

type publishDetail struct {
	ID              string  `json:"id"`
	Status          string  `json:"status"`
	StatusReason    string  `json:"status_reason"`
	CurrentRevision int     `json:"current_revision"`
	WorkflowID      *string `json:"workflow_id"`
	Revisions       []struct {
		Revision   int    `json:"revision"`
		Checksum   string `json:"checksum"`
		RollbackOf *int   `json:"rollback_of"`
	} `json:"revisions"`
	Results []struct {
		AgentID  string `json:"agent_id"`
		Action   string `json:"action"`
		Status   string `json:"status"`
		Message  string `json:"message"`
		Checksum string `json:"checksum"`
		Revision int    `json:"revision"`
	} `json:"results"`
	Timeline []struct {
		Type    string  `json:"type"`
		Message string  `json:"message"`
		AgentID *string `json:"agent_id"`
	} `json:"timeline"`
	WaitState *struct {
		Phase     string `json:"phase"`
		ClusterID string `json:"cluster_id"`
		Presence  struct {
			ClusterName string `json:"cluster_name"`
			Agents      []struct {
				Name         string     `json:"name"`
				Status       string     `json:"status"`
				OfflineSince *time.Time `json:"offline_since"`
			} `json:"agents"`
		} `json:"presence"`
	} `json:"wait_state"`
}

func (s *stack) detail(t testing.TB, id string) publishDetail {
	t.Helper()
	return detailAs(t, s.owner, id)
}

// detailAs reads a publish through the client of its tenant.
func detailAs(t testing.TB, c *apitest.Client, id string) publishDetail {
	t.Helper()
	r := c.Get(prov + "/product-publishes/" + id)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var d publishDetail
	r.JSON(&d)
	return d
}

func (s *stack) waitStatus(t testing.TB, id, want string, within time.Duration) publishDetail {
	t.Helper()
	return waitStatusAs(t, s.owner, id, want, within)
}

// waitStatusAs waits, reading through c, until a publish has status want and no run in flight.
func waitStatusAs(t testing.TB, c *apitest.Client, id, want string, within time.Duration) publishDetail {
	t.Helper()
	var d publishDetail
	defer func() {
		if t.Failed() {
			t.Logf("last state of %s: %+v", id, d)
		}
	}()
	require.Eventually(t, func() bool {
		d = detailAs(t, c, id)
		return d.Status == want && d.WorkflowID == nil
	}, within, 100*time.Millisecond, "publish %s never became %s", id, want)
	return d
}

func (d publishDetail) has(eventType string) bool {
	for _, e := range d.Timeline {
		if e.Type == eventType {
			return true
		}
	}
	return false
}

type runningAgent struct {
	dir    string
	agent  *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

func (s *stack) startAgent(t testing.TB, dir, token string) *runningAgent {
	t.Helper()
	a, err := agent.New(agent.Config{ServerAddr: s.env.Replica.Addr, APIBaseURL: s.env.URL, StateDir: dir, RegistrationToken: token,
		TransportCredentials: insecure.NewCredentials(), MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Logger: s.env.Log.With("component", "agent")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{dir: dir, agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	return ra
}

func (ra *runningAgent) stop() {
	ra.cancel()
	select {
	case <-ra.done:
	case <-time.After(10 * time.Second):
	}
}

func (ra *runningAgent) identity(t testing.TB) agent.Identity {
	t.Helper()
	var id agent.Identity
	require.Eventually(t, func() bool {
		got, err := agent.LoadIdentity(ra.dir)
		if err != nil || got == nil {
			return false
		}
		id = *got
		return true
	}, 20*time.Second, 50*time.Millisecond)
	return id
}
