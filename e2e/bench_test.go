package e2e

// BenchmarkPublish: a product publish end to end, beside a bare Temporal floor measured on the
// same dev server in the same run (make bench).
//
// Method
//
// Publish: the real api (REST + agent gateway on one database), an in-process worker with every
// workflow and activity, and K reference agents of one cluster connected over gRPC, each the
// real agent binary in its own process (data plane "files"). One publish is POST /v1/provider/product-publishes (not a draft: the
// request starts PublishWorkflow) until the publish row says PUBLISHED: freeze the revision,
// queue the DeployCommand, LISTEN/NOTIFY wakes the gateway, the agents fetch the snapshot over
// REST, render it, write it and answer, the gateway stores the result and signals the run, and
// the run's last activity writes PUBLISHED. Every publish is a fresh one of the same product (a
// product can have many). A publish is done when its run has completed with PUBLISHED, read as
// the floor reads its own: the Temporal client's long poll on the run's result (an earlier
// version polled the rows every 2 ms, which cost more CPU than some of what it measured).
//
// Floor: the least a Temporal workflow with the same shape can take on the same dev server: a
// workflow with one activity and one signal round trip. The benchmark starts it, the activity
// tells the benchmark (through a channel) that it ran and returns, and the workflow then waits
// for a signal that the benchmark sends as soon as it hears from the activity. It ends when the
// workflow has completed (the client's long poll on its result). Its worker is in the same
// process with the same default options as the publish worker, on its own task queue.
//
// Both are measured sequentially (p50, p99 over IMPRUN_BENCH_PUBLISHES runs, default 50) and at
// concurrency IMPRUN_BENCH_CONCURRENCY (default 32) over IMPRUN_BENCH_CONCURRENT_RUNS runs
// (default 160): runs per second from the first start to the last completion. Floor and publish
// alternate (floor, publish sequentially, then floor, publish concurrently IMPRUN_BENCH_ROUNDS
// times, default 3, reporting the median of each and of the rounds' ratios) after a warm-up, so a
// drift of the shared dev server during the run hits both. Beside the times it prints the CPU
// each phase cost per run in the processes involved (this one, the control plane: the api, the
// worker, the agent gateway; the Temporal dev server; PostgreSQL with its backends; the agents),
// which is the phase's own even on a busy machine where the wall times are not.
//
// Run: go test -run '^$' -bench BenchmarkPublish -benchtime 1x ./e2e/
// Knobs: IMPRUN_BENCH_AGENTS (connected agents, default 3), IMPRUN_BENCH_PUBLISHES,
// IMPRUN_BENCH_CONCURRENCY, IMPRUN_BENCH_CONCURRENT_RUNS, IMPRUN_BENCH_CPUPROFILE=file (CPU of
// this process during the publish phases: file.1 sequential, file.2 concurrent),
// IMPRUN_BENCH_TRACE=1 (the Temporal history of the last sequential floor run and publish with
// the time of each event, and per phase where the publishes spent their time: created ->
// command queued -> first sent to an agent -> first result acked -> passed on to the run ->
// PUBLISHED, from the rows they left; the Store's statements per publish by their text; and,
// when the harness PostgreSQL preloads pg_stat_statements (IMPRUN_HARNESS_PG_STATEMENTS=1),
// its costliest statements during the concurrent publishes).
//
// The figures are only as quiet as the machine: the dev server, Postgres and this process share
// its two cores, so anything else running at the same time (other test binaries) shows up in
// both, most in the throughput.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/testharness"
	"github.com/imprun/imprun-server/workflows"
)

func BenchmarkPublish(b *testing.B) {
	agents := benchEnvInt(b, "IMPRUN_BENCH_AGENTS", 3)
	seqRuns := benchEnvInt(b, "IMPRUN_BENCH_PUBLISHES", 50)
	concurrency := benchEnvInt(b, "IMPRUN_BENCH_CONCURRENCY", 32)
	concRuns := benchEnvInt(b, "IMPRUN_BENCH_CONCURRENT_RUNS", 160)
	rounds := max(benchEnvInt(b, "IMPRUN_BENCH_ROUNDS", 3), 1)

	bs := newBenchStack(b, agents)
	floor := newBenchFloor(b, bs.env)

	// Warm-up: connections, caches, the first workflow task of each type. A running api's
	// pool is warm: earlier traffic opened its connections, whose Postgres backends have their
	// catalog caches filled and their statements prepared and past the five custom plans
	// Postgres makes before it settles on one. Sequential runs open a few; a burst at the
	// concurrent rounds' concurrency opens the rest, so that the first round does not pay for
	// them (the floor is warmed the same way).
	var err error
	for _, run := range []func() (time.Duration, error){floor.run, bs.publish} {
		if _, err = sequential(3, run); err == nil {
			_, err = concurrent(2*concurrency, concurrency, run)
		}
		if err != nil {
			b.Fatal(err)
		}
	}

	var pub, flr benchFigures
	var ratio float64 // the median of the concurrent rounds' publish/floor ratios
	var flrRPS, pubRPS, ratios []float64
	var cpu phaseCPU
	meter := newCPUMeter(b, bs)
	b.ResetTimer()
	for range b.N {
		m := meter.start()
		if flr.seq, err = sequential(seqRuns, floor.run); err != nil {
			b.Fatal(err)
		}
		cpu.floorSeq = m.per(seqRuns)
		trace := os.Getenv("IMPRUN_BENCH_TRACE") != ""
		if bs.stmts != nil {
			bs.stmts.Take() // what set the stack up and warmed it is not a publish's
		}
		phase := time.Now()
		stopProfile := startProfile(b)
		m = meter.start()
		pub.seq, err = sequential(seqRuns, bs.publish)
		cpu.pubSeq = m.per(seqRuns)
		stopProfile()
		if err != nil {
			b.Fatal(err)
		}
		if trace {
			traceRun(b, floor.tc, fmt.Sprintf("%s-%d", floor.queue, floor.n))
			traceRun(b, floor.tc, workflows.PublishWorkflowID(bs.last, 1))
			bs.stages(b, "sequential", phase)
		}
		// The concurrent phase alternates floor and publish `rounds` times: the dev server's
		// and the machine's pace drift by a third between runs, and a ratio of neighbours
		// (their median over the rounds) is steadier than one of a single pair.
		flrRPS, pubRPS, ratios = flrRPS[:0], pubRPS[:0], ratios[:0]
		for round := range rounds {
			m = meter.start()
			rps, err := concurrent(concRuns, concurrency, floor.run)
			if err != nil {
				b.Fatal(err)
			}
			cpu.floorConc = addCPU(cpu.floorConc, m.per(concRuns*rounds))
			flrRPS = append(flrRPS, rps)
			if round < rounds-1 {
				m = meter.start()
				if rps, err = concurrent(concRuns, concurrency, bs.publish); err != nil {
					b.Fatal(err)
				}
				cpu.pubConc = addCPU(cpu.pubConc, m.per(concRuns*rounds))
				pubRPS, ratios = append(pubRPS, rps), append(ratios, rps/flrRPS[round])
			}
		}
		phase = time.Now()
		if bs.stmts != nil {
			bs.stmts.Take() // the rounds before are not the traced round's publishes
		}
		stopProfile = startProfile(b)
		stopWaits := func() {}
		if trace {
			stopWaits = bs.sampleWaits()
		}
		statements := trace && bs.env.DB.ResetStatementStats()
		sessions0, _ := bs.env.DB.SessionsOpened()
		m = meter.start()
		rps, err := concurrent(concRuns, concurrency, bs.publish)
		cpu.pubConc = addCPU(cpu.pubConc, m.per(concRuns*rounds))
		if err == nil {
			pubRPS, ratios = append(pubRPS, rps), append(ratios, rps/flrRPS[rounds-1])
			pub.rps, flr.rps, ratio = medianOf(pubRPS), medianOf(flrRPS), medianOf(ratios)
		}
		if trace {
			time.Sleep(1100 * time.Millisecond) // the backends flush their counters once a second
			if sessions1, err := bs.env.DB.SessionsOpened(); err == nil {
				fmt.Printf("postgres connections opened during the concurrent publishes: %d\n", sessions1-sessions0)
			}
		}
		stopWaits()
		if statements {
			top, err := bs.env.DB.TopStatements(25)
			if err != nil {
				b.Logf("pg_stat_statements: %v", err)
			}
			fmt.Printf("postgres, concurrent publishes (pg_stat_statements, %d publishes):\n  %s\n", concRuns, strings.Join(top, "\n  "))
		}
		stopProfile()
		if err != nil {
			b.Fatal(err)
		}
		if trace {
			traceRun(b, floor.tc, workflows.PublishWorkflowID(bs.last, 1))
			bs.stages(b, "concurrent", phase)
		}
	}
	b.StopTimer()

	pub50, pub99 := percentile(pub.seq, 50), percentile(pub.seq, 99)
	flr50, flr99 := percentile(flr.seq, 50), percentile(flr.seq, 99)
	b.ReportMetric(ms(pub50), "publish-p50-ms")
	b.ReportMetric(ms(pub99), "publish-p99-ms")
	b.ReportMetric(pub.rps, "publish/s")
	b.ReportMetric(ms(flr50), "floor-p50-ms")
	b.ReportMetric(ms(flr99), "floor-p99-ms")
	b.ReportMetric(flr.rps, "floor/s")
	b.ReportMetric(float64(pub50)/float64(flr50), "p50-x-floor")
	b.ReportMetric(ratio, "rps-x-floor")
	// Printed, not logged: a benchmark's log is cut to a few lines without -v.
	fmt.Printf("\npublish, %d agents, load average %s\n", agents, testharness.LoadAverage())
	fmt.Printf("  %-28s %12s %12s %8s %s\n", "", "publish", "floor", "ratio", "goal")
	fmt.Printf("  %-28s %9.0f ms %9.0f ms %7.2fx %s\n", "p50, sequential", ms(pub50), ms(flr50), float64(pub50)/float64(flr50), "<= 1.1x")
	fmt.Printf("  %-28s %9.0f ms %9.0f ms %7.2fx\n", "p99, sequential", ms(pub99), ms(flr99), float64(pub99)/float64(flr99))
	fmt.Printf("  %-28s %10.1f/s %10.1f/s %7.2fx %s\n", fmt.Sprintf("throughput, concurrency %d", concurrency), pub.rps, flr.rps, ratio, ">= 0.9x")
	each := make([]string, len(ratios))
	for i := range ratios {
		each[i] = fmt.Sprintf("%.1f/%.1f (%.2fx)", pubRPS[i], flrRPS[i], ratios[i])
	}
	fmt.Printf("  %-28s %s; the median of each\n", "  rounds, publish/floor", strings.Join(each, ", "))
	fmt.Printf("  CPU per run (ms), sequential: %s\n", cpu.line(cpu.pubSeq, cpu.floorSeq))
	fmt.Printf("  CPU per run (ms), concurrent: %s\n", cpu.line(cpu.pubConc, cpu.floorConc))
	fmt.Printf("  (%d sequential runs, %d rounds of %d runs at concurrency %d; the floor: a bare workflow with one activity and one signal)\n",
		seqRuns, rounds, concRuns, concurrency)
}

// cpuMeter reads the CPU time of the processes a publish runs in: this one (the api, the
// worker and the agent gateway), the Temporal dev server, PostgreSQL and the agents. CPU time,
// unlike wall time, is the phase's own on a machine that is busy with other work.
type cpuMeter struct {
	temporal, postgres int
	agents             []int
}

func newCPUMeter(b *testing.B, bs *benchStack) cpuMeter {
	return cpuMeter{temporal: bs.env.TemporalServer.Pid(), postgres: testharness.Postgres(b).Pid(), agents: bs.agentPids}
}

type cpuReading struct {
	m   cpuMeter
	cpu [4]time.Duration
}

func (m cpuMeter) read() [4]time.Duration {
	var agents time.Duration
	for _, pid := range m.agents {
		agents += testharness.ProcessTreeCPU(pid)
	}
	return [4]time.Duration{testharness.SelfCPU(), testharness.ProcessTreeCPU(m.temporal), testharness.ProcessTreeCPU(m.postgres), agents}
}

func (m cpuMeter) start() cpuReading { return cpuReading{m: m, cpu: m.read()} }

// per returns the CPU each process spent since start, per run.
func (r cpuReading) per(runs int) [4]time.Duration {
	now := r.m.read()
	var out [4]time.Duration
	for i := range out {
		out[i] = (now[i] - r.cpu[i]) / time.Duration(runs)
	}
	return out
}

type phaseCPU struct{ floorSeq, pubSeq, floorConc, pubConc [4]time.Duration }

func (phaseCPU) line(pub, floor [4]time.Duration) string {
	sum := func(c [4]time.Duration) time.Duration { return c[0] + c[1] + c[2] + c[3] }
	return fmt.Sprintf("publish %.1f (control plane %.1f, Temporal %.1f, Postgres %.1f, agents %.1f) | floor %.1f (%.1f, %.1f, %.1f) | %.2fx",
		ms(sum(pub)), ms(pub[0]), ms(pub[1]), ms(pub[2]), ms(pub[3]), ms(sum(floor)), ms(floor[0]), ms(floor[1]), ms(floor[2]),
		float64(sum(pub))/float64(max(sum(floor), 1)))
}

func addCPU(a, b [4]time.Duration) [4]time.Duration {
	for i := range a {
		a[i] += b[i]
	}
	return a
}

// medianOf a few figures (the mean of the middle two for an even count).
func medianOf(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

type benchFigures struct {
	seq []time.Duration
	rps float64
}

func sequential(n int, run func() (time.Duration, error)) ([]time.Duration, error) {
	out := make([]time.Duration, n)
	for i := range out {
		var err error
		if out[i], err = run(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// concurrent runs n runs on `workers` goroutines and returns runs per second.
func concurrent(n, workers int, run func() (time.Duration, error)) (float64, error) {
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	errs := make(chan error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range next {
				if _, err := run(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1 // nearest rank
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func startProfile(b *testing.B) (stop func()) {
	path := os.Getenv("IMPRUN_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	// Two phases write to the same file: the second one (concurrent) wins; name them apart.
	profileCount++
	f, err := os.Create(fmt.Sprintf("%s.%d", path, profileCount))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

var profileCount int

func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// benchStack is newStack's control plane (one product with one service, route and backend; an
// envoy-gateway template; a cluster) with K agents connected.
type benchStack struct {
	env       *apitest.Env
	stmts     *storetest.StatementCounts // IMPRUN_BENCH_TRACE: the Store's statements by text
	agentPids []int                      // the agent processes
	owner     string                     // bearer token
	body      []byte                     // the POST body of a publish, with HOSTNAME for each publish's own
	http      *http.Client
	seq       atomic.Int64

	tc          client.Client
	mu          sync.Mutex
	last        string        // the last publish done (for IMPRUN_BENCH_TRACE)
	lastCreated time.Duration // how long its POST took
}

func newBenchStack(b *testing.B, agents int) *benchStack {
	b.Helper()
	var stmts *storetest.StatementCounts
	// The production timing (agent.heartbeat_interval and presence_flush_interval), not the
	// e2e tests' 1 s heartbeat and 200 ms flush: those ten times faster loops (heartbeat
	// flushes, the drift check every heartbeat) are a load a deployed api does not carry.
	prod := &apitest.AgentTiming{HeartbeatInterval: 10 * time.Second, MissedHeartbeats: 3, FlushInterval: 2 * time.Second}
	// The api and the worker each have a pool of database.max_open_conns = max_idle_conns = 20
	// in a deployment; here they share one process and one pool, so it holds both. A pool with
	// fewer idle than open connections opened two Postgres connections (backend forks) per
	// concurrent publish.
	env := apitest.New(b, apitest.Options{WithTemporal: true, Agents: prod, MaxOpenConns: 40, MaxIdleConns: 40, Hooks: func(e *apitest.Env) httpapi.Hooks {
		if os.Getenv("IMPRUN_BENCH_TRACE") != "" {
			stmts = e.DB.CountStatements() // before the API serves a request
		}
		return httpapi.Hooks{}
	}})
	env.StartWorker(b)
	ops, owner := env.As(opsP), env.As(ownerP)
	mk := func(c *apitest.Client, path string, body any) map[string]any {
		b.Helper()
		r := c.Post(path, body)
		if r.Status != http.StatusCreated {
			b.Fatalf("POST %s: %d %s", path, r.Status, r.Body)
		}
		return r.Map()
	}
	acme := mk(ops, "/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})["id"].(string)
	mk(ops, "/v1/operator/tenants/"+acme+"/domains", map[string]any{"domain": "example.com"})
	clusterID := mk(ops, "/v1/operator/clusters", map[string]any{"name": "kr-prod-1", "region": "kr-central",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}, {"name": "nginx"}}}})["id"].(string)
	serviceID := mk(owner, prov+"/api-services", map[string]any{"name": "payments", "version": "1.0.0", "status": "active"})["id"].(string)
	backendID := mk(owner, prov+"/api-services/"+serviceID+"/backends", map[string]any{"name": "payments-be", "scheme": "http",
		"endpoints": []map[string]any{{"host": "payments.internal", "port": 8080}}})["id"].(string)
	mk(owner, prov+"/api-services/"+serviceID+"/routes", map[string]any{"name": "charges",
		"paths": []map[string]any{{"type": "prefix", "value": "/charges"}}, "backend_refs": []map[string]any{{"backend_id": backendID, "weight": 100}}})
	gatewayID := mk(owner, prov+"/gateways", map[string]any{"name": "edge", "gateway_class": "envoy-gateway",
		"listeners": []map[string]any{{"name": "http", "port": 80, "protocol": "HTTP"}}})["id"].(string)
	productID := mk(owner, prov+"/products", map[string]any{"name": "Payments", "version": "1.0.0", "api_services": []string{serviceID}})["id"].(string)
	if r := owner.Post(prov+"/products/"+productID+"/activate", nil); r.Status != http.StatusOK {
		b.Fatalf("activate: %d %s", r.Status, r.Body)
	}
	token := mk(ops, "/v1/operator/clusters/"+clusterID+"/registration-tokens", map[string]any{"max_uses": agents})["token"].(string)

	// The agents are the real agent binary, each its own process as at the edge (data plane
	// "files": the deploy is rendered and written, no gateway reloads), so what they cost is
	// theirs and not the control plane's.
	agentBin := testharness.GoBuild(b, "./cmd/agent")
	var agentPids []int
	for i := range agents {
		cmd := exec.Command(agentBin, "run", "--insecure", "--data-plane", "files", "--state-dir", b.TempDir(),
			"--name", fmt.Sprintf("bench-%d", i), "--server", env.Replica.Addr, "--api", env.URL, "--registration-token", token)
		agentPids = append(agentPids, testharness.StartProcess(b, fmt.Sprintf("agent-%d", i), cmd).Pid())
	}
	deadline := time.Now().Add(30 * time.Second)
	for env.Replica.Gateway.SessionCount() < agents {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d agents connected within 30s", env.Replica.Gateway.SessionCount(), agents)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Every publish has a hostname of its own: one cluster serves a hostname for one publish.
	body, _ := json.Marshal(map[string]any{"product_id": productID, "cluster_id": clusterID, "gateway_id": gatewayID,
		"environment": "prod", "hostname": "HOSTNAME"})
	bs := &benchStack{env: env, stmts: stmts, agentPids: agentPids, owner: env.Token(ownerP), body: body,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}}
	tc, err := env.Temporal.Client()
	if err != nil {
		b.Fatal(err)
	}
	bs.tc = tc
	return bs
}

// publish creates a publish (which starts its workflow) and waits until its row says PUBLISHED.
func (bs *benchStack) publish() (time.Duration, error) {
	n := bs.seq.Add(1)
	body := bytes.Replace(bs.body, []byte("HOSTNAME"), []byte(fmt.Sprintf("p%d.bench.example.com", n)), 1)
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, bs.env.URL+prov+"/product-publishes", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bs.owner)
	resp, err := bs.http.Do(req)
	if err != nil {
		return 0, err
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("create publish: %d %s", resp.StatusCode, raw)
	}
	var p struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || p.ID == "" {
		return 0, fmt.Errorf("create publish: %s", raw)
	}
	created := time.Since(start)
	// The run's result, as the floor waits for its own: the client's long poll on the run.
	// The run writes PUBLISHED in its last step, so the row says so by then.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var st string
	if err := bs.tc.GetWorkflow(ctx, workflows.PublishWorkflowID(p.ID, 1), "").Get(ctx, &st); err != nil {
		return 0, fmt.Errorf("publish %s: %w", p.ID, err)
	}
	if st != models.PublishPublished {
		return 0, fmt.Errorf("publish %s ended %s", p.ID, st)
	}
	bs.mu.Lock()
	bs.last, bs.lastCreated = p.ID, created
	bs.mu.Unlock()
	return time.Since(start), nil
}

// traceRun logs when each event of a run's history happened, from the run's start: where a
// run's time goes (IMPRUN_BENCH_TRACE=1).
func traceRun(b *testing.B, tc client.Client, workflowID string) {
	it := tc.GetWorkflowHistory(context.Background(), workflowID, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var first time.Time
	var lines []string
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			b.Logf("trace %s: %v", workflowID, err)
			return
		}
		at := ev.GetEventTime().AsTime()
		if first.IsZero() {
			first = at
		}
		detail := ""
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
			detail = a.GetActivityType().GetName()
		}
		lines = append(lines, fmt.Sprintf("%7.1fms %s %s", ms(at.Sub(first)), ev.GetEventType(), detail))
	}
	// Printed, not logged: a benchmark's log is cut short.
	fmt.Printf("history of %s:\n%s\n", workflowID, strings.Join(lines, "\n"))
}

// stages prints where the publishes created since `since` spent their time, from the rows
// they left (IMPRUN_BENCH_TRACE=1): median and p90 of each step, in ms.
func (bs *benchStack) stages(b *testing.B, label string, since time.Time) {
	timelines, err := bs.env.DB.PublishTimelines(since)
	if err != nil {
		b.Logf("stages: %v", err)
		return
	}
	names := []string{"created->command queued", "queued->first sent to an agent", "sent->first result acked",
		"acked->passed on (signal)", "passed on->PUBLISHED row"}
	steps := make([][]time.Duration, len(names))
	for _, at := range timelines {
		for i := range names {
			if at[i] != nil && at[i+1] != nil {
				steps[i] = append(steps[i], at[i+1].Sub(*at[i]))
			}
		}
	}
	var out []string
	for i, n := range names {
		if len(steps[i]) > 0 {
			out = append(out, fmt.Sprintf("  %-32s p50=%6.1fms p90=%6.1fms (n=%d)", n, ms(percentile(steps[i], 50)), ms(percentile(steps[i], 90)), len(steps[i])))
		}
	}
	fmt.Printf("publish stages, %s:\n%s\n", label, strings.Join(out, "\n"))
	if bs.stmts != nil && len(timelines) > 0 {
		bs.printStatements(label, len(timelines))
	}
}

// printStatements prints the statements the Store ran since the last call, per publish, most
// frequent first (IMPRUN_BENCH_TRACE=1): what a publish costs Postgres.
func (bs *benchStack) printStatements(label string, publishes int) {
	type kv struct {
		k string
		n int
	}
	var all []kv
	total := 0
	for k, n := range bs.stmts.Take() {
		all = append(all, kv{k, n})
		total += n
	}
	slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
	out := []string{fmt.Sprintf("  %6.1f in all", float64(total)/float64(publishes))}
	for _, e := range all[:min(len(all), 40)] {
		out = append(out, fmt.Sprintf("  %6.2f %s", float64(e.n)/float64(publishes), e.k))
	}
	fmt.Printf("store statements per publish, %s (%d publishes):\n%s\n", label, publishes, strings.Join(out, "\n"))
}

// sampleWaits samples what Postgres's active backends wait on every 20 ms until stopped, and
// then prints the most frequent (IMPRUN_BENCH_TRACE=1): a lock that serialises publishes shows
// up as Lock:... on the statement that waits.
func (bs *benchStack) sampleWaits() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	counts := map[string]int{}
	samples := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			waits, err := bs.env.DB.ActiveWaits(ctx)
			if err != nil {
				continue
			}
			samples++
			for _, w := range waits {
				counts[w]++
			}
		}
	}()
	return func() {
		cancel()
		<-done
		type kv struct {
			k string
			n int
		}
		var all []kv
		for k, n := range counts {
			all = append(all, kv{k, n})
		}
		slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
		var out []string
		for _, e := range all[:min(len(all), 12)] {
			out = append(out, fmt.Sprintf("  %5.2f %s", float64(e.n)/float64(max(samples, 1)), e.k))
		}
		fmt.Printf("postgres active backends per sample (%d samples), concurrent:\n%s\n", samples, strings.Join(out, "\n"))
	}
}

// benchFloor is the bare workflow: one activity, then one signal that the benchmark sends once
// it has heard from the activity.
type benchFloor struct {
	tc    client.Client
	queue string
	n     int64
	mu    sync.Mutex
}

const (
	floorWorkflowName = "BenchFloorWorkflow"
	floorActivityName = "BenchFloorActivity"
	floorSignal       = "go"
)

func floorWorkflow(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
	if err := workflow.ExecuteActivity(ctx, floorActivityName).Get(ctx, nil); err != nil {
		return err
	}
	workflow.GetSignalChannel(ctx, floorSignal).Receive(ctx, nil)
	return nil
}

func newBenchFloor(b *testing.B, env *apitest.Env) *benchFloor {
	b.Helper()
	tc, err := env.Temporal.Client()
	if err != nil {
		b.Fatal(err)
	}
	f := &benchFloor{tc: tc, queue: env.TaskQueue + "-floor"}
	ran := make(chan string, 1024)
	w := worker.New(tc, f.queue, worker.Options{})
	w.RegisterWorkflowWithOptions(floorWorkflow, workflow.RegisterOptions{Name: floorWorkflowName})
	w.RegisterActivityWithOptions(func(ctx context.Context) error {
		ran <- activity.GetInfo(ctx).WorkflowExecution.ID
		return nil
	}, activity.RegisterOptions{Name: floorActivityName})
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	signalled := make(chan struct{})
	go func() {
		defer close(signalled)
		for {
			select {
			case <-ctx.Done():
				return
			case id := <-ran:
				go func() {
					if err := tc.SignalWorkflow(ctx, id, "", floorSignal, nil); err != nil && ctx.Err() == nil {
						b.Errorf("signal %s: %v", id, err)
					}
				}()
			}
		}
	}()
	b.Cleanup(func() { cancel(); <-signalled; w.Stop() })
	return f
}

func (f *benchFloor) run() (time.Duration, error) {
	f.mu.Lock()
	f.n++
	id := fmt.Sprintf("%s-%d", f.queue, f.n)
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	run, err := f.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: f.queue}, floorWorkflowName)
	if err != nil {
		return 0, fmt.Errorf("start floor workflow: %w", err)
	}
	if err := run.Get(ctx, nil); err != nil {
		return 0, fmt.Errorf("floor workflow %s: %w", id, err)
	}
	return time.Since(start), nil
}
