package e2e

// BenchmarkGateway: the data plane end to end through a real nginx run by the reference agent,
// beside the bare Temporal floor (one activity, one signal; see BenchmarkPublish) measured on
// the same dev server in the same run (make bench).
//
//   - publish -> first 200: POST /v1/provider/product-publishes of a new publish (its own
//     hostname, no auth) until the first 200 through nginx for that hostname, polled every 5 ms;
//     N sequential runs (IMPRUN_BENCH_GATEWAY_RUNS, default 50). Target p99 < 1 s.
//   - revoke -> first refusal: POST /v1/customer/credentials/{id}/revoke of a key that works at
//     the gateway until nginx first answers 401 for it, polled every 5 ms; N sequential runs.
//     Target p99 < 1 s.
//   - burst: IMPRUN_BENCH_GATEWAY_BURST (default 100) publishes created at once (16 clients);
//     reported: nginx reloads they cost (generations of the agent's nginx tree) and commands per
//     reload, and the time until all of them are PUBLISHED.
//
// Run: go test -run '^$' -bench BenchmarkGateway -benchtime 1x ./e2e/
// The reload cost of one apply by tree size (1, 100, 1,000 publishes) is BenchmarkApply in
// agent/nginx, beside a bare `nginx -t` + SIGHUP of the same tree.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

func BenchmarkGateway(b *testing.B) {
	runs := benchEnvInt(b, "IMPRUN_BENCH_GATEWAY_RUNS", 50)
	burst := benchEnvInt(b, "IMPRUN_BENCH_GATEWAY_BURST", 100)

	be := newEchoBackend(b, "v1")
	s := newStack(b, stackOptions{gatewayClass: "nginx", backend: be.endpoint()})
	floor := newBenchFloor(b, s.env)
	addr := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(b))
	dir := b.TempDir()
	ga := s.startGatewayAgent(b, dir, s.token(b), addr)
	ga.identity(b)

	created(b, s.ops, "/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custP.Email})
	customer := s.env.As(custP)
	app := created(b, customer, "/v1/customer/apps", map[string]any{"name": "shop"})["id"].(string)
	keyed := created(b, s.owner, prov+"/product-publishes", s.publishBody(map[string]any{"auth_mode": "api-key", "hostname": "keyed.example.com"}))["id"].(string)
	s.waitStatus(b, keyed, models.PublishPublished, 60*time.Second)
	rs := customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": keyed, "client_app_id": app})
	if rs.Status != http.StatusCreated {
		b.Fatalf("subscribe: %d %s", rs.Status, rs.Body)
	}

	n := 0
	publishTo200 := func() (time.Duration, error) {
		n++
		host := fmt.Sprintf("p%d.bench.example.com", n)
		start := time.Now()
		r := s.owner.Post(prov+"/product-publishes", s.publishBody(map[string]any{"hostname": host}))
		if r.Status != http.StatusCreated {
			return 0, fmt.Errorf("publish: %d %s", r.Status, r.Body)
		}
		return waitGateway(addr, host, nil, http.StatusOK, start)
	}
	revokeToRefusal := func() (time.Duration, error) {
		c := customer.Post("/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})
		if c.Status != http.StatusCreated {
			return 0, fmt.Errorf("credential: %d %s", c.Status, c.Body)
		}
		id, k := c.Map()["id"].(string), c.Map()["key"].(string)
		if _, err := waitGateway(addr, "keyed.example.com", key(k), http.StatusOK, time.Now()); err != nil {
			return 0, fmt.Errorf("key never worked: %w", err)
		}
		start := time.Now()
		r := customer.Post("/v1/customer/credentials/"+id+"/revoke", map[string]any{"reason": "bench"})
		if r.Status != http.StatusOK {
			return 0, fmt.Errorf("revoke: %d %s", r.Status, r.Body)
		}
		return waitGateway(addr, "keyed.example.com", key(k), http.StatusUnauthorized, start)
	}

	// Warm-up.
	if _, err := sequential(3, floor.run); err != nil {
		b.Fatal(err)
	}
	if _, err := sequential(2, publishTo200); err != nil {
		b.Fatal(err)
	}
	var flr, pub, rev []time.Duration
	var genBefore, genAfter int
	var burstTook time.Duration
	var err error
	b.ResetTimer()
	for range b.N {
		if flr, err = sequential(runs, floor.run); err != nil {
			b.Fatal(err)
		}
		if pub, err = sequential(runs, publishTo200); err != nil {
			b.Fatal(err)
		}
		if rev, err = sequential(runs, revokeToRefusal); err != nil {
			b.Fatal(err)
		}

		genBefore = nginxGeneration(b, dir)
		start := time.Now()
		ids := make([]string, burst)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range ids {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				r := s.owner.Post(prov+"/product-publishes", s.publishBody(map[string]any{"hostname": fmt.Sprintf("burst%d.bench.example.com", i)}))
				if r.Status == http.StatusCreated {
					ids[i] = r.Map()["id"].(string)
				}
			}(i)
		}
		wg.Wait()
		for _, id := range ids {
			if id == "" {
				b.Fatal("a burst publish was not created")
			}
			s.waitStatus(b, id, models.PublishPublished, 120*time.Second)
		}
		burstTook = time.Since(start)
		genAfter = nginxGeneration(b, dir)
	}
	b.StopTimer()

	reloads := genAfter - genBefore
	perReload := float64(burst) / float64(max(reloads, 1))
	b.ReportMetric(ms(percentile(pub, 50)), "publish-to-200-p50-ms")
	b.ReportMetric(ms(percentile(pub, 99)), "publish-to-200-p99-ms")
	b.ReportMetric(ms(percentile(rev, 50)), "revoke-to-401-p50-ms")
	b.ReportMetric(ms(percentile(rev, 99)), "revoke-to-401-p99-ms")
	b.ReportMetric(ms(percentile(flr, 50)), "floor-p50-ms")
	b.ReportMetric(perReload, "commands/reload")
	b.Logf("publish -> first 200: p50=%s p99=%s (target p99 < 1s) | revoke -> first 401: p50=%s p99=%s (target p99 < 1s) | "+
		"floor (Temporal activity + signal): p50=%s p99=%s | burst of %d publishes: %d nginx reloads (%.1f commands per reload), all PUBLISHED in %s; %d runs each",
		percentile(pub, 50).Round(time.Millisecond), percentile(pub, 99).Round(time.Millisecond),
		percentile(rev, 50).Round(time.Millisecond), percentile(rev, 99).Round(time.Millisecond),
		percentile(flr, 50).Round(time.Millisecond), percentile(flr, 99).Round(time.Millisecond),
		burst, reloads, perReload, burstTook.Round(time.Millisecond), runs)
}

// waitGateway polls the gateway until it answers want, and returns the time since start.
func waitGateway(addr, host string, headers map[string]string, want int, start time.Time) (time.Duration, error) {
	deadline := time.Now().Add(30 * time.Second)
	last := 0
	for time.Now().Before(deadline) {
		r, err := tryGateway(addr, host, "/charges", headers)
		if err == nil && r.Status == want {
			return time.Since(start), nil
		}
		if err == nil {
			last = r.Status
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s never answered %d (last %d)", host, want, last)
}

// nginxGeneration reads the generation number the agent's nginx tree points at.
func nginxGeneration(b *testing.B, stateDir string) int {
	b.Helper()
	target, err := os.Readlink(filepath.Join(stateDir, "nginx", "current"))
	if err != nil {
		b.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(target), "g"))
	if err != nil {
		b.Fatal(err)
	}
	return n
}
