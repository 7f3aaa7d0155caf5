package e2e

// BenchmarkCredentialPropagation: how long a new credential takes to reach every agent of the
// clusters it must be present on (make bench).
//
// Method
//
// One control plane: the real api (REST + agent gateway on one database) and an in-process
// worker with every workflow and activity. C clusters (C = 1, 10, 100, one sub-benchmark each),
// each with one simulated agent (simAgent: a bare agent.v1 gRPC client on its own connection
// that heartbeats and answers every CredentialUpsert/CredentialRevoke with a successful
// CommandAck at once; the reference agent's state directory and rendering would make 100 of
// them measure the agents, not the control plane). Each sub-benchmark has its own client app
// subscribed to the publishes of C clusters, so its credentials target exactly C clusters.
//
// One measurement is POST /v1/customer/apps/{id}/credentials (api_key) and everything that
// follows for real: the handler starts CredentialSyncWorkflow, PlanCredentialSync enqueues one
// upsert per cluster in the agent_commands outbox and NOTIFYs, the gateway LISTENs, sends each
// command to the cluster's agent and records the delivery, the agent acknowledges, the
// gateway's delivery writer stores the ack and passes it on as a credential-ack signal, and the
// workflow confirms the cluster's rollout row. Credentials are created one after another.
//
// Two figures per credential, both read from the rows the run leaves (so no polling error):
//   - acked: the POST until the last target agent's acknowledgement reached the gateway
//     (max agent_command_deliveries.acked_at: the time the gateway received the CommandAck).
//     This is "every agent of the C clusters has acknowledged"; the headline figure.
//   - confirmed: the POST until the last credential_rollouts row turned confirmed
//     (max confirmed_at): what the credential's detail shows, and when the workflow knows.
//
// The stage log line splits the p50 credential into: planned (the last rollout row queued),
// sent (the last command sent on a stream), acked, confirmed.
//
// Shortcuts (setup only, none on the measured path): the publishes are created through the
// API as drafts and then set PUBLISHED with SQL (a real publish needs a deploy round trip per
// cluster); the subscriptions are inserted active with SQL (the API would run a
// SubscriptionWorkflow each); the simulated agents are inserted with SQL with a known
// refresh-secret hash (secrets.Hash) and connect with agent id + refresh secret.
//
// Run: go test -run '^$' -bench BenchmarkCredentialPropagation -benchtime 1x ./e2e/
// Knobs: IMPRUN_BENCH_CREDENTIALS (measured credentials per C, default 100, so the p99 is not
// simply the slowest one; two more warm up).

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/secrets"
)

var propagationClusters = []int{1, 10, 100}

func BenchmarkCredentialPropagation(b *testing.B) {
	perC := benchEnvInt(b, "IMPRUN_BENCH_CREDENTIALS", 100)
	maxC := propagationClusters[len(propagationClusters)-1]
	ps := newPropagationStack(b, maxC, 1)
	for _, c := range propagationClusters {
		b.Run(fmt.Sprintf("clusters=%d", c), func(b *testing.B) {
			app := ps.app(b, c)
			for range 2 { // warm-up
				if _, err := ps.measure(app, c); err != nil {
					b.Fatal(err)
				}
			}
			var runs []propagation
			b.ResetTimer()
			for range b.N {
				runs = runs[:0]
				for range perC {
					p, err := ps.measure(app, c)
					if err != nil {
						b.Fatal(err)
					}
					runs = append(runs, p)
				}
			}
			b.StopTimer()
			acked, confirmed := make([]time.Duration, len(runs)), make([]time.Duration, len(runs))
			for i, r := range runs {
				acked[i], confirmed[i] = r.acked, r.confirmed
			}
			a50, a99 := percentile(acked, 50), percentile(acked, 99)
			c50, c99 := percentile(confirmed, 50), percentile(confirmed, 99)
			b.ReportMetric(ms(a50), "acked-p50-ms")
			b.ReportMetric(ms(a99), "acked-p99-ms")
			b.ReportMetric(ms(c50), "confirmed-p50-ms")
			b.ReportMetric(ms(c99), "confirmed-p99-ms")
			b.ReportMetric(0, "ns/op") // an op is a series of credentials; the figures above are what counts
			med := median(runs)
			b.Logf("credential propagation to %d clusters (1 simulated agent each, %d credentials): every agent acked p50=%s p99=%s | "+
				"rollout confirmed p50=%s p99=%s | p50 credential: POST answered %s, planned %s, last sent %s, last acked %s, last confirmed %s",
				c, len(runs), a50.Round(time.Millisecond), a99.Round(time.Millisecond), c50.Round(time.Millisecond), c99.Round(time.Millisecond),
				med.posted.Round(time.Millisecond), med.planned.Round(time.Millisecond), med.sent.Round(time.Millisecond),
				med.acked.Round(time.Millisecond), med.confirmed.Round(time.Millisecond))
		})
	}
}

// propagation is where one credential's time went, each from just before its POST.
type propagation struct {
	posted, planned, sent, acked, confirmed time.Duration
}

// median returns the run with the median acked time.
func median(runs []propagation) propagation {
	best := runs[0]
	m := percentile(func() []time.Duration {
		out := make([]time.Duration, len(runs))
		for i, r := range runs {
			out[i] = r.acked
		}
		return out
	}(), 50)
	for _, r := range runs {
		if r.acked == m {
			best = r
		}
	}
	return best
}

type propagationStack struct {
	env        *apitest.Env
	customer   *apitest.Client
	customerID string
	providerID string
	publishes  []string // one per cluster
}

// newPropagationStack has clusters clusters of agents simulated agents each.
func newPropagationStack(b testing.TB, clusters, agents int) *propagationStack {
	b.Helper()
	env := apitest.New(b, apitest.Options{WithTemporal: true, Agents: timing})
	env.StartWorker(b)
	ops, owner := env.As(opsP), env.As(ownerP)
	mk := func(c *apitest.Client, path string, body any) string {
		b.Helper()
		r := c.Post(path, body)
		if r.Status != http.StatusCreated {
			b.Fatalf("POST %s: %d %s", path, r.Status, r.Body)
		}
		return r.Map()["id"].(string)
	}
	ps := &propagationStack{env: env, customer: env.As(custP)}
	ps.providerID = mk(ops, "/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})
	mk(ops, "/v1/operator/tenants/"+ps.providerID+"/domains", map[string]any{"domain": "example.com"})
	ps.customerID = mk(ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	serviceID := mk(owner, prov+"/api-services", map[string]any{"name": "payments", "version": "1.0.0", "status": "active"})
	backendID := mk(owner, prov+"/api-services/"+serviceID+"/backends", map[string]any{"name": "payments-be", "scheme": "http",
		"endpoints": []map[string]any{{"host": "payments.internal", "port": 8080}}})
	mk(owner, prov+"/api-services/"+serviceID+"/routes", map[string]any{"name": "charges",
		"paths": []map[string]any{{"type": "prefix", "value": "/charges"}}, "backend_refs": []map[string]any{{"backend_id": backendID, "weight": 100}}})
	gatewayID := mk(owner, prov+"/gateways", map[string]any{"name": "edge", "gateway_class": "envoy-gateway",
		"listeners": []map[string]any{{"name": "http", "port": 80, "protocol": "HTTP"}}})
	productID := mk(owner, prov+"/products", map[string]any{"name": "Payments", "version": "1.0.0", "api_services": []string{serviceID}})
	if r := owner.Post(prov+"/products/"+productID+"/activate", nil); r.Status != http.StatusOK {
		b.Fatalf("activate: %d %s", r.Status, r.Body)
	}

	for i := range clusters {
		clusterID := mk(ops, "/v1/operator/clusters", map[string]any{"name": fmt.Sprintf("bench-%03d", i), "region": "bench",
			"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}})
		ps.publishes = append(ps.publishes, mk(owner, prov+"/product-publishes", map[string]any{"product_id": productID, "cluster_id": clusterID,
			"gateway_id": gatewayID, "environment": "prod", "hostname": fmt.Sprintf("payments-%03d.example.com", i), "draft": true}))

		for range agents {
			// Shortcut: the simulated agent is inserted with a refresh secret it then connects with.
			secret := secrets.New("imprr_")
			agentID, err := env.DB.InsertPendingAgent(b, clusterID, secrets.Hash(secret))
			if err != nil {
				b.Fatal(err)
			}
			a, err := dialSimAgent(env.Replica.Addr, &agentv1.ConnectRequest{AgentId: agentID,
				Credential: &agentv1.ConnectRequest_RefreshSecret{RefreshSecret: secret}})
			if err != nil {
				b.Fatalf("simulated agent of cluster %d: %v", i, err)
			}
			b.Cleanup(a.close)
		}
	}
	// Shortcut: published without a deploy round trip per cluster.
	if err := env.DB.MarkTenantPublished(ps.providerID, "bench"); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for env.Replica.Gateway.SessionCount() < clusters*agents {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d simulated agents connected within 30s", env.Replica.Gateway.SessionCount(), clusters*agents)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ps
}

// app creates a client app subscribed (shortcut: inserted active) to the publishes of the
// first c clusters.
func (ps *propagationStack) app(b testing.TB, c int) string {
	b.Helper()
	r := ps.customer.Post("/v1/customer/apps", map[string]any{"name": fmt.Sprintf("bench-%d", c)})
	if r.Status != http.StatusCreated {
		b.Fatalf("create app: %d %s", r.Status, r.Body)
	}
	app := r.Map()["id"].(string)
	for _, pub := range ps.publishes[:c] {
		if err := ps.env.DB.InsertActiveSubscription(ps.customerID, ps.providerID, pub, app, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	return app
}

// measure creates one credential for app and waits until its c rollout rows are confirmed and
// c deliveries acknowledged.
func (ps *propagationStack) measure(app string, c int) (propagation, error) {
	var p propagation
	start := time.Now()
	r := ps.customer.Post("/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})
	if r.Status != http.StatusCreated {
		return p, fmt.Errorf("create credential: %d %s", r.Status, r.Body)
	}
	p.posted = time.Since(start)
	id := r.Map()["id"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		pr, err := ps.env.DB.CredentialPropagation(ctx, id)
		confirmed, acked := pr.Confirmed, pr.Acked
		planned, sent, ackedAt, confirmedAt := pr.Planned, pr.Sent, pr.AckedAt, pr.ConfirmedAt
		if err != nil {
			return p, fmt.Errorf("credential %s: %w (%d of %d confirmed, %d acked)", id, err, confirmed, c, acked)
		}
		if confirmed == c && acked == c {
			p.planned, p.sent = planned.Time.Sub(start), sent.Time.Sub(start)
			p.acked, p.confirmed = ackedAt.Time.Sub(start), confirmedAt.Time.Sub(start)
			return p, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}
