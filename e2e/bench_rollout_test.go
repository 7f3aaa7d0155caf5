package e2e

// BenchmarkRollout: a rollout to N simulated clusters (IMPRUN_BENCH_ROLLOUT_CLUSTERS, default
// 100) in 4 waves of equal share with no soak and no gate, from POST /v1/provider/rollouts until
// the rollout row says succeeded, beside its floor measured on the same stack in the same run:
// N independent publishes (one per cluster) POSTed at once, until every one is PUBLISHED. Both
// create a fresh publish on every cluster (a new hostname per run), so the difference is what
// the rollout adds: its validation of every target up front, its waves (each waits for its
// slowest cluster), and one child run per cluster driven from one workflow.
//
// Every cluster has one simulated agent (simagent_test.go) that answers deploys at once; the
// api, its agent gateway, the worker, Postgres and the Temporal dev server are the e2e stack's.
// Floor and rollout alternate per iteration, after one warm-up of each.
//
// Run: go test -run '^$' -bench BenchmarkRollout -benchtime 1x ./e2e/

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
)

func BenchmarkRollout(b *testing.B) {
	n := benchEnvInt(b, "IMPRUN_BENCH_ROLLOUT_CLUSTERS", 100)
	s := newStack(b, stackOptions{})
	caps := map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}
	clusters := []string{s.clusterID}
	for i := 2; i <= n; i++ {
		clusters = append(clusters, created(b, s.ops, "/v1/operator/clusters", map[string]any{"name": fmt.Sprintf("sim-%d", i), "region": "kr-central", "capabilities": caps})["id"].(string))
	}
	for _, c := range clusters {
		tok := created(b, s.ops, "/v1/operator/clusters/"+c+"/registration-tokens", nil)["token"].(string)
		a, err := dialSimAgent(s.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: tok}, AgentName: "sim"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(a.close)
	}
	tenant := uuid.MustParse(s.tenantID)
	run := 0
	floor := func() time.Duration {
		run++
		host := fmt.Sprintf("floor-%d.example.com", run)
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var refused []string
		for _, c := range clusters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := s.owner.Post(prov+"/product-publishes", s.publishBody(map[string]any{"cluster_id": c, "hostname": host}))
				if r.Status != http.StatusCreated {
					mu.Lock()
					refused = append(refused, fmt.Sprintf("%d %s", r.Status, r.Body))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(refused) > 0 {
			b.Fatalf("%d of %d publishes refused; first: %s", len(refused), len(clusters), refused[0])
		}
		waitPublished(b, s.env.Store, tenant, host, len(clusters))
		return time.Since(start)
	}
	rollout := func() time.Duration {
		run++
		body := map[string]any{"product_id": s.productID, "gateway_id": s.gatewayID, "environment": "prod", "hostname": fmt.Sprintf("rollout-%d.example.com", run),
			"targets":  map[string]any{"cluster_ids": clusters},
			"strategy": map[string]any{"waves": []map[string]any{{"percent": 25}, {"percent": 25}, {"percent": 25}, {"percent": 25}}, "progress_deadline_seconds": 600}}
		start := time.Now()
		id := created(b, s.owner, prov+"/rollouts", body)["id"].(string)
		for {
			v := getRollout(b, s.owner, id)
			if v.Status == models.RolloutSucceeded {
				if v.Failures > 0 {
					b.Fatalf("rollout %s: %d failures", id, v.Failures)
				}
				return time.Since(start)
			}
			if v.Complete.Status {
				b.Fatalf("rollout %s ended %s: %s", id, v.Status, v.StatusReason)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	floor()
	rollout()
	var fl, ro []time.Duration
	b.ResetTimer()
	for range b.N {
		fl = append(fl, floor())
		ro = append(ro, rollout())
	}
	b.StopTimer()
	f50, r50 := percentile(fl, 50), percentile(ro, 50)
	b.ReportMetric(ms(f50), "floor-ms")
	b.ReportMetric(ms(r50), "rollout-ms")
	b.ReportMetric(float64(r50)/float64(f50), "rollout/floor")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d clusters: rollout in 4 waves, no soak, start -> succeeded p50 %s | floor: %d independent publishes at once -> all PUBLISHED p50 %s | ratio %.2f",
		len(clusters), r50.Round(time.Millisecond), len(clusters), f50.Round(time.Millisecond), float64(r50)/float64(f50))
}

// waitPublished polls until want publishes of the tenant on host have ended their run; one
// that ended FAILED fails the benchmark with its reason.
func waitPublished(b *testing.B, st *store.Store, tenant uuid.UUID, host string, want int) {
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		rows, _, err := st.ListPublishes(context.Background(), tenant, store.PublishFilter{}, store.Page{Limit: 10000})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for _, p := range rows {
			if p.Hostname != host {
				continue
			}
			switch p.Status {
			case models.PublishPublished:
				got++
			case models.PublishFailed:
				b.Fatalf("publish %s on %s: FAILED: %s", p.ID, host, p.StatusReason)
			}
		}
		if got == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("publishes on %s did not all reach PUBLISHED", host)
}
