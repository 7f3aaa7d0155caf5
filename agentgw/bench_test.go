package agentgw_test

// BenchmarkAgentFleet: N simulated agents, each on its own gRPC connection, on one agent
// gateway, beside a bare grpc-go bidi-stream server with the same clients (make bench).
//
// Method
//
// One process can hold at most RLIMIT_NOFILE descriptors (20,000 on the reference machine,
// and the hard limit can't be raised in its container), and N agents in the same process as
// their server need 2N sockets. So the agents run in a child process (this test binary
// re-executed with IMPRUN_BENCH_CHILD=clients), every agent with its own grpc.ClientConn and
// stream, and the server side is measured alone:
//
//   - gateway: the benchmark process itself, i.e. the real api wiring from apitest (agent
//     gateway on the real database, its pool sized as the api configures it, REST API beside
//     it, idle). RSS per agent is the growth of this process's VmRSS from before the agents
//     connect to when all N are connected and have heartbeated once, both read once garbage
//     collection has settled (settledRSS: GC until goroutine stacks stop shrinking, freed
//     memory returned to the OS), so the figure is memory the streams hold, not garbage the
//     collector has not reached yet. The client cost is not in it because the clients live in
//     the other process; nothing needs subtracting. Go stack and heap in use per agent are
//     printed beside it to say where the memory is.
//   - bare: a tiny AgentService in a second child process (IMPRUN_BENCH_CHILD=bare-server):
//     it answers ConnectRequest and heartbeats, pushes a CredentialUpsert to every stream on
//     request and counts the CommandAcks. Its RSS per stream is measured the same way.
//
// Both servers see the same client code (simAgent): ConnectRequest, then a heartbeat every
// heartbeat_interval_seconds from the ConnectResponse (first one at a random point of the
// first interval so the fleet is spread evenly), a CommandAck for every command.
//
// CPU at steady heartbeat is the server process's user+system time (getrusage) over a window
// (IMPRUN_BENCH_WINDOW, default 10 s) after every agent has heartbeated at least once; for the
// gateway the harness Postgres's CPU (/proc) and the clients' are printed beside it.
// Postgres writes per second are deltas of pg_stat_database (transactions committed; rows
// inserted+updated+deleted) of the gateway's database over the same window; PostgreSQL 15
// flushes those counters at most once a second per backend, so in a steady state the lag is
// the same at both ends of the window. The broadcast time is from EnqueueCommand of one
// cluster-wide credential_upsert to the moment agent_command_deliveries holds N acknowledged
// rows (so it includes storing the acks durably); for the bare server, from the first push to
// the Nth CommandAck received. Each server broadcasts IMPRUN_BENCH_BROADCASTS times (default
// 5, a second apart) and the figure is the median, every round printed beside it; the CPU
// the gateway's broadcast cost (api, Postgres, clients, per broadcast)
// is printed too, since on a shared machine wall time depends on what else runs (the load
// average at start and end is printed for that reason).
//
// Run: go test -run '^$' -bench BenchmarkAgentFleet -benchtime 1x ./agentgw/
// Knobs: IMPRUN_BENCH_AGENTS (default 10000), IMPRUN_BENCH_WINDOW (default 10s); for
// looking into the gateway: IMPRUN_BENCH_SKIP_BARE=1, IMPRUN_BENCH_HEAPPROFILE=file (heap
// while the fleet is connected, and in file.broadcasts after the broadcasts: what they
// allocated is -base file; the bare server's in file.bare),
// IMPRUN_BENCH_BROADCAST_CPUPROFILE=file (CPU during the first broadcast, the later ones' in
// file.round2 and on; the bare server's first in file.bare, the clients' until their last ack
// of the gateway's first in file.clients),
// IMPRUN_BENCH_CONNECT_CPUPROFILE=file (CPU while the fleet connects to the gateway),
// IMPRUN_HARNESS_PG_STATEMENTS=1 (Postgres's costliest statements during the broadcasts).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/retry"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/testharness"
)

const benchChildEnv = "IMPRUN_BENCH_CHILD"

// The child processes of the benchmark are this test binary; they never reach the tests.
func init() {
	switch os.Getenv(benchChildEnv) {
	case "clients":
		os.Exit(runChild(newClientsChild().handle))
	case "bare-server":
		if os.Getenv("IMPRUN_BENCH_HEAPPROFILE") != "" {
			runtime.MemProfileRate = heapProfileRate
		}
		os.Exit(runChild(newBareServer().handle))
	}
}

// heapProfileRate samples one allocation per 4 KB for IMPRUN_BENCH_HEAPPROFILE: fine enough
// for objects of one stream in 10,000, without slowing the connect down as every allocation
// would.
const heapProfileRate = 4096

// benchHeartbeat is the production default (agent.heartbeat_interval).
const benchHeartbeat = 10 * time.Second

func BenchmarkAgentFleet(b *testing.B) {
	n := envInt("IMPRUN_BENCH_AGENTS", 10000)
	window := envDuration("IMPRUN_BENCH_WINDOW", 10*time.Second)
	limit := raiseFDLimit()
	// Each process holds about n sockets plus its own (Postgres pool, logs, listeners).
	if maxN := int(limit) - 1000; n > maxN {
		fmt.Printf("agent fleet: RLIMIT_NOFILE is %d; running %d agents instead of %d\n", limit, maxN, n)
		n = maxN
	}
	b.Logf("agent fleet: %d agents, each its own grpc.ClientConn in a client process; heartbeat %s; window %s; RLIMIT_NOFILE %d",
		n, benchHeartbeat, window, limit)

	load0 := testharness.LoadAverage()
	var bare fleetResult
	if os.Getenv("IMPRUN_BENCH_SKIP_BARE") == "" {
		bare = benchBare(b, n, window)
	}
	gw := benchGateway(b, n, window)

	b.ReportMetric(gw.rssPerAgentKB, "KB/agent")
	b.ReportMetric(bare.rssPerAgentKB, "bare-KB/stream")
	b.ReportMetric(median(gw.broadcasts).Seconds()*1000, "ms/broadcast")
	b.ReportMetric(median(bare.broadcasts).Seconds()*1000, "bare-ms/broadcast")
	b.ReportMetric(gw.cpuPercent, "cpu%-steady")
	b.ReportMetric(bare.cpuPercent, "bare-cpu%-steady")
	b.ReportMetric(gw.pgXactPerSec, "pg-xact/s")
	b.ReportMetric(gw.pgRowsPerSec, "pg-rows/s")

	var sb strings.Builder
	fmt.Fprintf(&sb, "\nagent fleet, %d agents (each its own connection), heartbeat %s, %d CPUs, load average %s at start, %s at end\n",
		n, benchHeartbeat, runtime.NumCPU(), load0, testharness.LoadAverage())
	fmt.Fprintf(&sb, "  %-34s %14s %14s %8s\n", "", "agent gateway", "bare grpc-go", "ratio")
	row := func(name, unit string, g, r float64) {
		ratio := "-"
		if r > 0 {
			ratio = fmt.Sprintf("%.2fx", g/r)
		}
		fmt.Fprintf(&sb, "  %-34s %11.1f %-2s %11.1f %-2s %8s\n", name, g, unit, r, unit, ratio)
	}
	row("RSS per connected agent", "KB", gw.rssPerAgentKB, bare.rssPerAgentKB)
	row("broadcast acknowledged by all", "ms", median(gw.broadcasts).Seconds()*1000, median(bare.broadcasts).Seconds()*1000)
	fmt.Fprintf(&sb, "  %-34s %s; bare %s\n", "  (median of rounds, ms, in order)", msList(gw.broadcasts), msList(bare.broadcasts))
	row("server CPU at steady heartbeat", "%", gw.cpuPercent, bare.cpuPercent)
	fmt.Fprintf(&sb, "  %-34s %11.1f %%  (clients' process: %.1f %%)\n", "Postgres CPU at steady heartbeat", gw.pgCPUPercent, gw.clientCPUPercent)
	fmt.Fprintf(&sb, "  %-34s %11.1f /s\n", "Postgres transactions (window)", gw.pgXactPerSec)
	fmt.Fprintf(&sb, "  %-34s %11.1f /s\n", "Postgres rows written (window)", gw.pgRowsPerSec)
	fmt.Fprintf(&sb, "  %-34s %11.1f ms (all %d CommandAcks sent by the agents)\n", "  of which agents acked", gw.allAcksSent.Seconds()*1000, n)
	fmt.Fprintf(&sb, "  %-34s %s ms (the rounds, in order)\n", "  durable after the last ack", msList(gw.tails))
	fmt.Fprintf(&sb, "  %-34s %8.2f s api, %.2f s Postgres, %.2f s clients (bare: %.2f s server, %.2f s clients)\n", "  CPU spent on the broadcast",
		gw.broadcastCPU[0].Seconds(), gw.broadcastCPU[1].Seconds(), gw.broadcastCPU[2].Seconds(), bare.broadcastCPU[0].Seconds(), bare.broadcastCPU[2].Seconds())
	row("connect the fleet", "s", gw.connect.Seconds(), bare.connect.Seconds())
	fmt.Fprintf(&sb, "  %-34s %8.2f s api, %.2f s Postgres, %.2f s clients (bare: %.2f s server, %.2f s clients)\n", "  CPU spent connecting",
		gw.connectCPU[0].Seconds(), gw.connectCPU[1].Seconds(), gw.connectCPU[2].Seconds(), bare.connectCPU[0].Seconds(), bare.connectCPU[2].Seconds())
	if g := gw.claimGroups; g[1] > 0 {
		fmt.Fprintf(&sb, "  %-34s %8.0f connects claimed in %.0f groups (%.1f a group)\n", "    claims committed together", g[0], g[1], g[0]/g[1])
	}
	fmt.Fprintf(&sb, "  %-34s %11.1f KB (client process, per agent)\n", "client cost, for reference", gw.clientKB)
	fmt.Fprintf(&sb, "  %-34s %11.2f %14.2f\n", "server goroutines per agent", gw.goroutinesPerAgent, bare.goroutinesPerAgent)
	row("  Go stacks per agent", "KB", gw.stackPerAgentKB, bare.stackPerAgentKB)
	row("  Go heap per agent", "KB", gw.heapPerAgentKB, bare.heapPerAgentKB)
	row("    of which live objects", "KB", gw.livePerAgentKB, bare.livePerAgentKB)
	fmt.Fprintf(&sb, "  goal (issue 4): within 1.5x of the bare server for RSS and broadcast\n")
	fmt.Print(sb.String()) // complete (a benchmark's b.Log is cut to a few lines without -v)
}

type fleetResult struct {
	rssPerAgentKB      float64
	broadcasts         []time.Duration // one per round, in order
	allAcksSent        time.Duration   // median
	tails              []time.Duration // per round: from the last ack sent to the broadcast durable
	cpuPercent         float64
	pgXactPerSec       float64
	pgRowsPerSec       float64
	connect            time.Duration
	claimGroups        [2]float64 // the connects claimed while connecting, and the groups they were claimed in
	clientKB           float64
	goroutinesPerAgent float64
	stackPerAgentKB    float64
	heapPerAgentKB     float64
	livePerAgentKB     float64 // the heap's live objects (the rest is free space in spans in use)
	pgCPUPercent       float64
	clientCPUPercent   float64
	broadcastCPU       [3]time.Duration // api process, Postgres, clients
	connectCPU         [3]time.Duration // the same while the fleet connects
}

// broadcastRounds is how many broadcasts each server makes (IMPRUN_BENCH_BROADCASTS, default
// 5): one broadcast's wall time on a loaded two-core machine swings by half between runs of the
// same code (garbage collection, the drift check, heartbeat flushes landing inside it or not),
// so the figure is the median of several.
func broadcastRounds(b *testing.B) int { return max(1, envInt("IMPRUN_BENCH_BROADCASTS", 5)) * b.N }

// broadcastPause separates two broadcasts, so that one's tail (passed-on marks, the clients'
// garbage) is not the next one's start.
const broadcastPause = time.Second

// median of ds (0 for none).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// msList prints ds in milliseconds ("-" for none).
func msList(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strconv.FormatInt(d.Milliseconds(), 10)
	}
	return strings.Join(parts, " ")
}

// benchBare measures the bare grpc-go server in its own process.
func benchBare(b *testing.B, n int, window time.Duration) fleetResult {
	srv := startChild(b, "bare-server")
	addr := srv.do(b, childReq{Op: "listen"}).Addr
	clients := startChild(b, "clients")
	before := srv.do(b, childReq{Op: "stats", GC: true})

	ccl0 := clients.do(b, childReq{Op: "stats"})
	r := clients.do(b, childReq{Op: "connect", Addr: addr, Creds: make([]string, n)})
	if r.Connected != n {
		b.Fatalf("bare server: %d of %d agents connected (first error: %s)", r.Connected, n, r.FirstErr)
	}
	csrv1, ccl1 := srv.do(b, childReq{Op: "stats"}), clients.do(b, childReq{Op: "stats"})
	waitFor(b, 60*time.Second, "bare server streams", func() bool { return srv.do(b, childReq{Op: "stats"}).Streams == n })
	time.Sleep(benchHeartbeat + time.Second) // every agent has heartbeated once
	after := srv.do(b, childReq{Op: "stats", GC: true})
	if path := os.Getenv("IMPRUN_BENCH_HEAPPROFILE"); path != "" {
		if r := srv.do(b, childReq{Op: "heapprofile", Addr: path + ".bare"}); r.Err != "" {
			b.Fatal(r.Err)
		}
	}

	c0 := srv.do(b, childReq{Op: "stats"})
	time.Sleep(window)
	c1 := srv.do(b, childReq{Op: "stats"})

	rounds := broadcastRounds(b)
	var times []time.Duration
	var srvCPU, clCPU time.Duration
	for i := 0; i < rounds; i++ {
		if i > 0 {
			time.Sleep(broadcastPause)
		}
		s0, cl0 := srv.do(b, childReq{Op: "stats"}), clients.do(b, childReq{Op: "stats"})
		br := srv.do(b, childReq{Op: "broadcast"})
		if br.Err != "" {
			b.Fatal(br.Err)
		}
		s1, cl1 := srv.do(b, childReq{Op: "stats"}), clients.do(b, childReq{Op: "stats"})
		times = append(times, br.Elapsed)
		srvCPU += s1.CPU - s0.CPU
		clCPU += cl1.CPU - cl0.CPU
	}
	clients.do(b, childReq{Op: "quit"})
	srv.do(b, childReq{Op: "quit"})
	return fleetResult{
		rssPerAgentKB:      float64(after.RSSKB-before.RSSKB) / float64(n),
		broadcasts:         times,
		cpuPercent:         100 * float64(c1.CPU-c0.CPU) / float64(c1.At.Sub(c0.At)),
		goroutinesPerAgent: float64(after.Goroutines-before.Goroutines) / float64(n),
		stackPerAgentKB:    float64(after.StackKB-before.StackKB) / float64(n),
		heapPerAgentKB:     float64(after.HeapKB-before.HeapKB) / float64(n),
		livePerAgentKB:     float64(after.LiveKB-before.LiveKB) / float64(n),
		connect:            r.Elapsed,
		connectCPU:         [3]time.Duration{csrv1.CPU - before.CPU, 0, ccl1.CPU - ccl0.CPU},
		broadcastCPU:       [3]time.Duration{srvCPU / time.Duration(rounds), 0, clCPU / time.Duration(rounds)},
	}
}

// benchGateway measures the agent gateway in this process.
func benchGateway(b *testing.B, n int, window time.Duration) fleetResult {
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	env := apitest.New(b, apitest.Options{
		Agents: &apitest.AgentTiming{HeartbeatInterval: benchHeartbeat, MissedHeartbeats: 3, FlushInterval: 2 * time.Second},
		// Results go to benchSink, which decides like TemporalSink without Temporal: the
		// gateway is measured, not Temporal (TemporalSink signals a cluster's first success).
		GatewayOptions: []agentgw.Option{agentgw.WithLogger(quiet), agentgw.WithResultSink(&benchSink{})},
	})
	// The pool as the api process configures it by default (database.max_open_conns,
	// max_idle_conns: 20 and 20). With 10 idle, as before that default changed, a connecting
	// fleet kept closing and opening connections (a Postgres backend forked each time, and
	// about 750 pgx connections' setup as garbage among the sessions' long-lived objects).
	env.SQL.SetMaxOpenConns(20)
	env.SQL.SetMaxIdleConns(20)
	gw := env.Replica.Gateway
	ctx := context.Background()

	// The agents exist already (registration is not what is measured): rows in SQL, and each
	// connects with an agent JWT minted for it.
	clusterID := uuid.MustParse(env.DB.InsertCluster(b, "bench", "bench", `{"gateway_classes": []}`))
	creds := make([]string, 0, n)
	for _, id := range env.DB.InsertPendingAgents(b, clusterID, n) {
		tok, _ := gw.Signer().Mint(id, clusterID, 1)
		creds = append(creds, tok)
	}
	// As autovacuum would have by then: a table of n agents that was never analysed has the
	// planner read a connecting agent's row by agents_cluster_status_idx, all n of the
	// cluster's rows for each (Postgres spent 2-3 ms a connect on that at 3,000 agents).
	env.DB.Analyze(b)

	clients := startChild(b, "clients")
	if os.Getenv("IMPRUN_BENCH_HEAPPROFILE") != "" {
		runtime.MemProfileRate = heapProfileRate
	}
	g0 := runtime.NumGoroutine()
	rss0 := settledRSS()
	stack0, heap0, live0 := memInUse()
	stopConnectProfile := cpuProfile(b, os.Getenv("IMPRUN_BENCH_CONNECT_CPUPROFILE"))
	connectStatements := env.DB.ResetStatementStats() // with IMPRUN_HARNESS_PG_STATEMENTS=1
	ccl0 := clients.do(b, childReq{Op: "stats"})
	cpg0, ccpu0 := testharness.Postgres(b).CPU(), testharness.SelfCPU()
	start := time.Now()
	r := clients.do(b, childReq{Op: "connect", Addr: env.Replica.Addr, Creds: creds})
	if r.Connected != n {
		b.Fatalf("gateway: %d of %d agents connected (first error: %s)", r.Connected, n, r.FirstErr)
	}
	connect := time.Since(start)
	cpg1, ccpu1 := testharness.Postgres(b).CPU(), testharness.SelfCPU()
	claimed, groups := claimGroupsObserved(b, env)
	stopConnectProfile()
	ccl1 := clients.do(b, childReq{Op: "stats"})
	connectCPU := [3]time.Duration{ccpu1 - ccpu0, cpg1 - cpg0, ccl1.CPU - ccl0.CPU}
	if connectStatements {
		top, err := env.DB.TopStatements(12)
		must(b, err)
		fmt.Printf("postgres, connecting the fleet (pg_stat_statements):\n  %s\n", strings.Join(top, "\n  "))
	}
	waitFor(b, 60*time.Second, "gateway sessions", func() bool { return gw.SessionCount() == n })
	waitFor(b, 60*time.Second, "agents connected in Postgres", func() bool {
		return env.DB.CountAgentsWithStatus(b, models.AgentConnected) == n
	})
	// Every agent has heartbeated once and the coalesced heartbeats have been flushed.
	time.Sleep(benchHeartbeat + 2*time.Second)
	rss1 := settledRSS()
	stack1, heap1, live1 := memInUse()
	g1 := runtime.NumGoroutine()
	if path := os.Getenv("IMPRUN_BENCH_HEAPPROFILE"); path != "" {
		f, err := os.Create(path)
		must(b, err)
		must(b, pprof.Lookup("heap").WriteTo(f, 0))
		f.Close()
	}
	cs := clients.do(b, childReq{Op: "stats", GC: true})

	// Steady heartbeat: process CPU and Postgres writes over the window.
	type pgStat struct{ xact, rows int64 }
	readPG := func() pgStat {
		var s pgStat
		s.xact, s.rows = env.DB.Writes(b)
		return s
	}
	cl0, pgc0 := clients.do(b, childReq{Op: "stats"}), testharness.Postgres(b).CPU()
	pg0, cpu0, t0 := readPG(), testharness.SelfCPU(), time.Now()
	time.Sleep(window)
	pg1, cpu1, t1 := readPG(), testharness.SelfCPU(), time.Now()
	cl1, pgc1 := clients.do(b, childReq{Op: "stats"}), testharness.Postgres(b).CPU()
	secs := t1.Sub(t0).Seconds()
	if live := gw.SessionCount(); live != n {
		b.Fatalf("only %d of %d agents still connected after the window", live, n)
	}

	// Broadcasts: one command to the cluster, acknowledged by every agent, several times (the
	// median is the figure); CPU is counted over the broadcasts only, not the pauses between.
	rounds := broadcastRounds(b)
	var times, sentAt []time.Duration
	var cpu [3]time.Duration
	statements := env.DB.ResetStatementStats() // with IMPRUN_HARNESS_PG_STATEMENTS=1
	for i := 0; i < rounds; i++ {
		if i > 0 {
			time.Sleep(broadcastPause)
		}
		cmd := models.AgentCommand{ClusterID: clusterID, Kind: models.CommandCredentialUpsert, Priority: models.PriorityNormal,
			DedupeKey: "bench/" + uuid.NewString(), SupersedeKey: "credential/bench-" + strconv.Itoa(i),
			Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1, Type: "api_key",
				KeyPrefix: "imp_bench123", SecretHash: strings.Repeat("ab", 32), ClientAppID: uuid.NewString(),
				Grants: []models.CredentialGrant{{PublishID: uuid.NewString(), Limits: models.PlanLimits{RequestsPerMinute: 600}}}})}
		path := os.Getenv("IMPRUN_BENCH_BROADCAST_CPUPROFILE")
		if path != "" && i > 0 {
			path += ".round" + strconv.Itoa(i+1)
		}
		stopProfile := cpuProfile(b, path)
		cl0 := clients.do(b, childReq{Op: "stats"})
		pg0, cpu0 := testharness.Postgres(b).CPU(), testharness.SelfCPU()
		start := time.Now()
		_, err := env.Store.EnqueueCommand(ctx, &cmd)
		must(b, err)
		// Nothing is durable before every ack was sent: the child says when that was, and the
		// database is polled only from then on (a count every few milliseconds during the
		// whole broadcast cost Postgres and this process more than some of what it measured).
		w := clients.do(b, childReq{Op: "waitacks", Want: cl0.Acked + int64(n)})
		if w.Err != "" {
			b.Fatal(w.Err)
		}
		waitFor(b, 120*time.Second, "broadcast acknowledged", func() bool {
			return env.DB.CountDeliveries(b, cmd.ID, models.DeliveryAcked) == n
		})
		times = append(times, time.Since(start))
		sentAt = append(sentAt, w.At.Sub(start))
		pg1, cpu1 := testharness.Postgres(b).CPU(), testharness.SelfCPU()
		stopProfile()
		cl1 := clients.do(b, childReq{Op: "stats"})
		cpu[0] += cpu1 - cpu0
		cpu[1] += pg1 - pg0
		cpu[2] += cl1.CPU - cl0.CPU
	}
	for i := range cpu {
		cpu[i] /= time.Duration(rounds)
	}
	tails := make([]time.Duration, rounds)
	for i := range tails {
		tails[i] = times[i] - sentAt[i]
	}
	if path := os.Getenv("IMPRUN_BENCH_HEAPPROFILE"); path != "" {
		runtime.GC() // a heap profile is as of the last collection
		f, err := os.Create(path + ".broadcasts")
		must(b, err)
		must(b, pprof.Lookup("heap").WriteTo(f, 0))
		f.Close()
	}
	if statements {
		top, err := env.DB.TopStatements(12)
		must(b, err)
		fmt.Printf("postgres, broadcasts (pg_stat_statements, %d broadcasts):\n  %s\n", rounds, strings.Join(top, "\n  "))
	}
	clients.do(b, childReq{Op: "quit"})
	return fleetResult{
		rssPerAgentKB:      float64(rss1-rss0) / float64(n),
		broadcasts:         times,
		allAcksSent:        median(sentAt),
		tails:              tails,
		cpuPercent:         100 * float64(cpu1-cpu0) / float64(t1.Sub(t0)),
		pgXactPerSec:       float64(pg1.xact-pg0.xact-1) / secs, // minus the first read itself
		pgRowsPerSec:       float64(pg1.rows-pg0.rows) / secs,
		connect:            connect,
		connectCPU:         connectCPU,
		claimGroups:        [2]float64{claimed, float64(groups)},
		clientKB:           float64(cs.RSSKB-r.RSSKBBefore) / float64(n),
		goroutinesPerAgent: float64(g1-g0) / float64(n),
		stackPerAgentKB:    float64(stack1-stack0) / float64(n),
		heapPerAgentKB:     float64(heap1-heap0) / float64(n),
		livePerAgentKB:     float64(live1-live0) / float64(n),
		pgCPUPercent:       100 * float64(pgc1-pgc0) / float64(t1.Sub(t0)),
		clientCPUPercent:   100 * float64(cl1.CPU-cl0.CPU) / float64(t1.Sub(t0)),
		broadcastCPU:       cpu,
	}
}

// cpuProfile profiles this process's CPU into path until the returned func is called (nothing
// for an empty path); a -cpuprofile of the whole run gives way to it.
func cpuProfile(b *testing.B, path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	must(b, err)
	pprof.StopCPUProfile()
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// benchSink stands in for TemporalSink without Temporal: the first result of a command is
// passed on (to nobody) and the command is then decided, so the later results are settled and
// stored as passed on, as TemporalSink's DecidedCommands settles a cluster's later credential
// acknowledgements.
type benchSink struct{ decided sync.Map }

func (s *benchSink) PassOn(_ context.Context, r store.UnpassedResult) error {
	s.decided.Store(r.CommandID, true)
	return nil
}

func (s *benchSink) Settled(r store.UnpassedResult) bool {
	_, ok := s.decided.Load(r.CommandID)
	return ok
}

// ---- the simulated agent ----

// simAgent is one agent on its own connection, reconnecting as the reference agent does
// (agent.connectLoop): one grpc.ClientConn with the agent's dial options for its whole life, a
// new stream after every end, and between two attempts the agent's own backoff (retry.Backoff
// with agent.DefaultMinBackoff and DefaultMaxBackoff, reset after a stream that connected; the
// longest wait after Close{SUPERSEDED}; the channel's own reconnects within the same bounds,
// agent.ReconnectDialOption). A stream sends ConnectRequest, heartbeats at the interval the
// server asks for (the first at a random point of the first interval, so the fleet is spread
// evenly) and acknowledges every command.
type simAgent struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// fleetTarget counts the agents of one server (target) a client process runs.
type fleetTarget struct {
	live, acked atomic.Int64
}

// simHostname is the hostname the agents of target i report: the gateway stores it in their
// rows, so a delivery can be attributed to the replica its agent is connected to.
func simHostname(target int) string { return "bench-r" + strconv.Itoa(target) }

// startSimAgent runs an agent until close; first is called once, with the outcome of its first
// attempt.
func startSimAgent(addr, source, jwt, hostname string, ctr *fleetTarget, first func(error)) (*simAgent, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), // as agent.connectLoop dials
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4 << 20)),
		agent.ReconnectDialOption(agent.DefaultMinBackoff, agent.DefaultMaxBackoff)}
	if source != "" {
		// Loopback connections from one address run out of ephemeral ports at about 14,000
		// here (half the range); each client process connects to each server from an
		// address of its own.
		local := &net.TCPAddr{IP: net.ParseIP(source)}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: local}).DialContext(ctx, "tcp", addr)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &simAgent{cancel: cancel, done: make(chan struct{})}
	var once sync.Once
	report := func(err error) { once.Do(func() { first(err) }) }
	go func() {
		defer close(a.done)
		defer conn.Close()
		client := agentv1.NewAgentServiceClient(conn)
		bo := retry.Backoff{Min: agent.DefaultMinBackoff, Max: agent.DefaultMaxBackoff}
		for {
			connected, superseded := simSession(ctx, client, jwt, hostname, ctr, report)
			if ctx.Err() != nil {
				return
			}
			if connected {
				bo.Reset()
			}
			delay := bo.Next()
			if superseded {
				delay = agent.DefaultMaxBackoff
			}
			if !retry.Sleep(ctx, delay) {
				return
			}
		}
	}()
	return a, nil
}

// simSession is one stream, from ConnectRequest to its end.
func simSession(ctx context.Context, client agentv1.AgentServiceClient, jwt, hostname string, ctr *fleetTarget, report func(error)) (connected, superseded bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(ctx)
	if err != nil {
		report(err)
		return false, false
	}
	req := &agentv1.ConnectRequest{AgentVersion: "bench", Hostname: hostname}
	if jwt != "" {
		req.Credential = &agentv1.ConnectRequest_AgentJwt{AgentJwt: jwt}
	}
	_ = stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: req}}) // an error surfaces on Recv
	first, err := stream.Recv()
	if err != nil {
		report(err)
		return false, false
	}
	cr := first.GetConnectResponse()
	if cr == nil {
		report(fmt.Errorf("first message is not a ConnectResponse: %v", first))
		return false, first.GetClose().GetReason() == agentv1.CloseReason_CLOSE_REASON_SUPERSEDED
	}
	interval := time.Duration(cr.GetHeartbeatIntervalSeconds()) * time.Second
	if interval <= 0 {
		interval = benchHeartbeat
	}
	ctr.live.Add(1)
	defer ctr.live.Add(-1)
	report(nil)

	acks := make(chan string, 16)
	var closeReason atomic.Int32
	read := make(chan struct{})
	go func() { // the only reader
		defer close(read)
		defer cancel()
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			var id string
			switch p := m.Payload.(type) {
			case *agentv1.ServerMessage_CredentialUpsert:
				id = p.CredentialUpsert.GetCommandId()
			case *agentv1.ServerMessage_CredentialRevoke:
				id = p.CredentialRevoke.GetCommandId()
			case *agentv1.ServerMessage_DeployCommand:
				id = p.DeployCommand.GetCommandId()
			case *agentv1.ServerMessage_Close:
				closeReason.Store(int32(p.Close.GetReason()))
				return
			}
			if id != "" {
				select {
				case acks <- id:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	defer func() { <-read }()
	beat := time.NewTimer(rand.N(interval))
	defer beat.Stop()
	for { // the only writer
		var msg *agentv1.AgentMessage
		select {
		case <-ctx.Done():
			return true, agentv1.CloseReason(closeReason.Load()) == agentv1.CloseReason_CLOSE_REASON_SUPERSEDED
		case <-beat.C:
			beat.Reset(interval)
			msg = &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{SentAt: timestamppb.Now()}}}
		case id := <-acks:
			msg = &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandAck{CommandAck: &agentv1.CommandAck{CommandId: id, Success: true}}}
		}
		if err := stream.Send(msg); err != nil {
			cancel()
			continue // the reader ends; ctx.Done above returns
		}
		if msg.GetCommandAck() != nil {
			ctr.acked.Add(1)
		}
	}
}

func (a *simAgent) close() {
	a.cancel()
	<-a.done
}

// clientsChild runs agents for one or more servers (targets).
type clientsChild struct {
	profiled bool // the first broadcast's wait for acks was profiled (IMPRUN_BENCH_BROADCAST_CPUPROFILE)
	agents   []*simAgent
	targets  []*fleetTarget
}

func newClientsChild() *clientsChild { return &clientsChild{} }

func (c *clientsChild) target(i int) *fleetTarget {
	for len(c.targets) <= i {
		c.targets = append(c.targets, &fleetTarget{})
	}
	return c.targets[i]
}

func (c *clientsChild) handle(req childReq) childResp {
	switch req.Op {
	case "connect":
		return c.connect(req)
	case "disconnect":
		var wg sync.WaitGroup
		for _, a := range c.agents {
			wg.Go(a.close)
		}
		wg.Wait()
		c.agents = nil
		return c.stats(false)
	case "stats":
		return c.stats(req.GC)
	case "waitacks":
		return c.waitAcks(req.Want)
	}
	return childResp{Err: "unknown op " + req.Op}
}

// waitAcks returns, with the time, once this process's agents have sent want acks in all: the
// benchmark waits for a broadcast's acks here, in the child, rather than asking for stats
// every few milliseconds (each ask read the runtime's memory statistics, stopping the world).
func (c *clientsChild) waitAcks(want int64) childResp {
	if path := os.Getenv("IMPRUN_BENCH_BROADCAST_CPUPROFILE"); path != "" && !c.profiled {
		c.profiled = true
		if f, err := os.Create(path + ".clients"); err == nil {
			defer f.Close() // after the profile stops (defers run last first)
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var acked int64
		for _, t := range c.targets {
			acked += t.acked.Load()
		}
		if acked >= want {
			return childResp{Acked: acked, At: time.Now()}
		}
		if time.Now().After(deadline) {
			return childResp{Acked: acked, Err: fmt.Sprintf("%d of %d acks after 3 minutes", acked, want)}
		}
		time.Sleep(time.Millisecond)
	}
}

// connect starts one agent per credential (Targets[i] says which of Addrs it connects to; all
// go to Addr when there are no Addrs) and waits until every one is connected once, or a
// minute passed since the last one got in. At most 64 first attempts are in flight: a fleet
// that comes up is not a storm.
func (c *clientsChild) connect(req childReq) childResp {
	addrs := req.Addrs
	if len(addrs) == 0 {
		addrs = []string{req.Addr}
	}
	ctrs := make([]*fleetTarget, len(addrs))
	for i := range addrs {
		ctrs[i] = c.target(i)
	}
	live0 := c.live()
	before := settledRSS()
	start := time.Now()
	var (
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, 64)
	for i, cred := range req.Creds {
		t := 0
		if len(req.Targets) > i {
			t = req.Targets[i]
		}
		sem <- struct{}{}
		source := ""
		if req.Source != "" {
			source = req.Source + "." + strconv.Itoa(t+1)
		}
		a, err := startSimAgent(addrs[t], source, cred, simHostname(t), ctrs[t], func(err error) {
			<-sem
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
		if err != nil {
			return childResp{Err: err.Error()}
		}
		c.agents = append(c.agents, a)
	}
	want := live0 + int64(len(req.Creds))
	last, lastLive := time.Now(), c.live()
	for c.live() < want && time.Since(last) < time.Minute {
		time.Sleep(20 * time.Millisecond)
		if l := c.live(); l != lastLive {
			last, lastLive = time.Now(), l
		}
	}
	r := childResp{Connected: int(c.live() - live0), Failed: int(want - c.live()), Elapsed: time.Since(start), RSSKBBefore: before}
	if firstErr != nil && r.Failed > 0 {
		r.FirstErr = firstErr.Error()
	}
	return r
}

func (c *clientsChild) live() int64 {
	var n int64
	for _, t := range c.targets {
		n += t.live.Load()
	}
	return n
}

func (c *clientsChild) stats(gc bool) childResp {
	var acked int64
	r := childResp{}
	for _, t := range c.targets {
		acked += t.acked.Load()
		r.LiveBy = append(r.LiveBy, t.live.Load())
		r.AckedBy = append(r.AckedBy, t.acked.Load())
	}
	s := statsResp(gc, int(c.live()), acked)
	s.LiveBy, s.AckedBy = r.LiveBy, r.AckedBy
	return s
}

// ---- the bare grpc-go server ----

// bareServer is the baseline: the same proto, nothing but streams. It answers ConnectRequest
// and heartbeats, pushes a CredentialUpsert to every stream on request and counts the acks.
type bareServer struct {
	agentv1.UnimplementedAgentServiceServer
	mu      sync.Mutex
	streams map[*bareStream]struct{}
	acked   atomic.Int64
	ackedCh chan struct{} // signalled on every ack while a broadcast waits
	waiting atomic.Bool
	// profiled: the first broadcast was profiled (IMPRUN_BENCH_BROADCAST_CPUPROFILE).
	profiled bool
	prof     childProfile // asked for by BenchmarkFleetReplicas
}

type bareStream struct {
	mu sync.Mutex
	s  agentv1.AgentService_ConnectServer
}

func (s *bareStream) send(m *agentv1.ServerMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s.Send(m)
}

func newBareServer() *bareServer {
	return &bareServer{streams: map[*bareStream]struct{}{}, ackedCh: make(chan struct{}, 1)}
}

func (b *bareServer) Connect(stream agentv1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil || first.GetConnectRequest() == nil {
		return errors.New("no ConnectRequest")
	}
	bs := &bareStream{s: stream}
	if err := bs.send(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_ConnectResponse{ConnectResponse: &agentv1.ConnectResponse{
		AgentId: uuid.NewString(), HeartbeatIntervalSeconds: int32(benchHeartbeat / time.Second)}}}); err != nil {
		return err
	}
	b.mu.Lock()
	b.streams[bs] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.streams, bs)
		b.mu.Unlock()
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		switch m.Payload.(type) {
		case *agentv1.AgentMessage_Heartbeat:
			if err := bs.send(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_HeartbeatAck{HeartbeatAck: &agentv1.HeartbeatAck{ServerTime: timestamppb.Now()}}}); err != nil {
				return nil
			}
		case *agentv1.AgentMessage_CommandAck:
			b.acked.Add(1)
			if b.waiting.Load() {
				select {
				case b.ackedCh <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (b *bareServer) handle(req childReq) childResp {
	switch req.Op {
	case "listen":
		addr := req.Addr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		for i := 0; err != nil && i < 50; i++ { // a restarted server's port may take a moment to free
			time.Sleep(100 * time.Millisecond)
			ln, err = net.Listen("tcp", addr)
		}
		if err != nil {
			return childResp{Err: err.Error()}
		}
		srv := grpc.NewServer()
		agentv1.RegisterAgentServiceServer(srv, b)
		go func() { _ = srv.Serve(ln) }()
		return childResp{Addr: ln.Addr().String()}
	case "heapprofile": // to the file named by Addr
		f, err := os.Create(req.Addr)
		if err == nil {
			err = pprof.Lookup("heap").WriteTo(f, 0)
			_ = f.Close()
		}
		if err != nil {
			return childResp{Err: err.Error()}
		}
		return childResp{}
	case "cpuprofile", "stopprofile":
		return b.prof.handle(req)
	case "stats":
		b.mu.Lock()
		n := len(b.streams)
		b.mu.Unlock()
		return statsResp(req.GC, n, b.acked.Load())
	case "broadcast":
		b.mu.Lock()
		all := make([]*bareStream, 0, len(b.streams))
		for s := range b.streams {
			all = append(all, s)
		}
		b.mu.Unlock()
		target := b.acked.Load() + int64(len(all))
		if path := os.Getenv("IMPRUN_BENCH_BROADCAST_CPUPROFILE"); path != "" && !b.profiled {
			b.profiled = true
			f, err := os.Create(path + ".bare")
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				return childResp{Err: err.Error()}
			}
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		msg := &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_CredentialUpsert{CredentialUpsert: &agentv1.CredentialUpsert{
			CommandId: uuid.NewString(), CredentialId: uuid.NewString(), Version: 1, Type: agentv1.CredentialType_CREDENTIAL_TYPE_API_KEY,
			KeyPrefix: "imp_bench123", SecretHash: strings.Repeat("ab", 32), ClientAppId: uuid.NewString(),
			Grants: []*agentv1.CredentialGrant{{PublishId: uuid.NewString(), Limits: &agentv1.PlanLimits{RequestsPerMinute: 600}}}}}}
		b.waiting.Store(true)
		defer b.waiting.Store(false)
		start := time.Now()
		for _, s := range all {
			_ = s.send(msg)
		}
		deadline := time.After(2 * time.Minute)
		for b.acked.Load() < target {
			select {
			case <-b.ackedCh:
			case <-deadline:
				return childResp{Err: fmt.Sprintf("bare broadcast: %d of %d acks", b.acked.Load()-target+int64(len(all)), len(all))}
			}
		}
		return childResp{Elapsed: time.Since(start)}
	}
	return childResp{Err: "unknown op " + req.Op}
}

// ---- child processes ----

type childReq struct {
	Op    string   `json:"op"`
	Addr  string   `json:"addr,omitempty"`
	Creds []string `json:"creds,omitempty"` // one agent each; "" connects without a credential (bare server)
	GC    bool     `json:"gc,omitempty"`    // read RSS after a full GC and returning freed memory
	// Addrs and Targets spread the agents of a connect over several servers: agent i connects
	// to Addrs[Targets[i]].
	Addrs   []string `json:"addrs,omitempty"`
	Targets []int    `json:"targets,omitempty"`
	DBURL   string   `json:"db_url,omitempty"` // the database a replica child serves
	Source  string   `json:"source,omitempty"` // 127.x.y: a clients child connects to target t from 127.x.y.(t+1)
	Want    int64    `json:"want,omitempty"`   // waitacks: the acks in all to wait for
}

type childResp struct {
	Err         string        `json:"err,omitempty"`
	Addr        string        `json:"addr,omitempty"`
	Connected   int           `json:"connected,omitempty"`
	Failed      int           `json:"failed,omitempty"`
	FirstErr    string        `json:"first_err,omitempty"`
	Elapsed     time.Duration `json:"elapsed,omitempty"`
	Streams     int           `json:"streams,omitempty"`
	Acked       int64         `json:"acked,omitempty"`
	RSSKB       int64         `json:"rss_kb,omitempty"`
	RSSKBBefore int64         `json:"rss_kb_before,omitempty"`
	CPU         time.Duration `json:"cpu,omitempty"`
	At          time.Time     `json:"at"`
	Goroutines  int           `json:"goroutines,omitempty"`
	StackKB     int64         `json:"stack_kb,omitempty"`
	HeapKB      int64         `json:"heap_kb,omitempty"`
	LiveKB      int64         `json:"live_kb,omitempty"`
	Refused     int64         `json:"refused,omitempty"` // a replica's connects refused as busy (admission)
	// Per target of a clients child: agents connected, commands acknowledged.
	LiveBy  []int64 `json:"live_by,omitempty"`
	AckedBy []int64 `json:"acked_by,omitempty"`
}

func statsResp(gc bool, streams int, acked int64) childResp {
	var rss int64
	if gc {
		rss = settledRSS()
	} else {
		rss = readRSS()
	}
	stack, heap, live := memInUse()
	return childResp{Streams: streams, Acked: acked, RSSKB: rss, CPU: testharness.SelfCPU(), At: time.Now(), Goroutines: runtime.NumGoroutine(),
		StackKB: stack, HeapKB: heap, LiveKB: live}
}

// memInUse is the Go runtime's stack and heap memory in use, and the heap's live objects, in KB.
func memInUse() (stackKB, heapKB, liveKB int64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.StackInuse >> 10), int64(ms.HeapInuse >> 10), int64(ms.HeapAlloc >> 10)
}

// runChild serves requests from the benchmark on stdin until "quit" or EOF, answering on
// file descriptor 3 (stdout belongs to whatever else the child prints, a test's PASS line).
func runChild(handle func(childReq) childResp) int {
	raiseFDLimit()
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	enc := json.NewEncoder(os.NewFile(3, "bench-responses"))
	for {
		var req childReq
		if err := dec.Decode(&req); err != nil {
			return 0
		}
		if req.Op == "quit" {
			_ = enc.Encode(childResp{})
			return 0
		}
		if err := enc.Encode(handle(req)); err != nil {
			return 1
		}
	}
}

type child struct {
	mode  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	enc   *json.Encoder
	dec   *json.Decoder
	mu    sync.Mutex
	ended chan struct{} // closed once the process was waited for
}

// startChild starts this test binary as a child process of the benchmark in mode; args are
// its test flags (a child that runs as a test needs -test.run).
func startChild(b *testing.B, mode string, args ...string) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), benchChildEnv+"="+mode)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	must(b, err)
	pr, pw, err := os.Pipe()
	must(b, err)
	cmd.ExtraFiles = []*os.File{pw}
	must(b, cmd.Start())
	pw.Close()
	c := &child{mode: mode, cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), dec: json.NewDecoder(bufio.NewReader(pr)), ended: make(chan struct{})}
	go func() { _ = cmd.Wait(); pr.Close(); close(c.ended) }()
	b.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-c.ended:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-c.ended
		}
	})
	return c
}

// kill ends the child with SIGKILL, as a crashed or OOM-killed replica ends.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.ended
}

// call sends req and returns the answer; it may be used from any goroutine.
func (c *child) call(req childReq) (childResp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enc.Encode(req); err != nil {
		return childResp{}, fmt.Errorf("bench child %s %s: %w", c.mode, req.Op, err)
	}
	var r childResp
	if err := c.dec.Decode(&r); err != nil {
		return childResp{}, fmt.Errorf("bench child %s %s: %w", c.mode, req.Op, err)
	}
	if r.Err != "" && req.Op != "broadcast" {
		return r, fmt.Errorf("bench child %s %s: %s", c.mode, req.Op, r.Err)
	}
	return r, nil
}

func (c *child) do(b *testing.B, req childReq) childResp {
	b.Helper()
	r, err := c.call(req)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// ---- measurements ----

// readRSS is VmRSS of this process in KB.
func readRSS() int64 { return procKB("/proc/self/status", "VmRSS") }

// procKB is the field (in kB) of a /proc file of "Name:   1234 kB" lines; 0 when unknown.
func procKB(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// settledRSS is VmRSS once garbage collection has settled: a GC shrinks a goroutine stack
// that uses less than a quarter of it by half, so stacks grown by a deep call at connect time
// (the gateway authenticates on the stream's goroutine) take a few cycles to come down, as
// they do in a long-running process. Freed memory is returned to the OS before reading.
func settledRSS() int64 {
	var ms runtime.MemStats
	prev := uint64(1 << 62)
	for range 10 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.StackInuse >= prev {
			break
		}
		prev = ms.StackInuse
	}
	debug.FreeOSMemory()
	return readRSS()
}

// raiseFDLimit raises the soft RLIMIT_NOFILE as far as allowed and returns it.
func raiseFDLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return want.Cur
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

func waitFor(b *testing.B, within time.Duration, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func must(b testing.TB, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// childProfile is a child's CPU profile on request: "cpuprofile" starts one into the file
// named by Addr, "stopprofile" ends it (BenchmarkFleetReplicas profiles a broadcast in every
// server process this way).
type childProfile struct{ f *os.File }

func (p *childProfile) handle(req childReq) childResp {
	if req.Op == "stopprofile" {
		if p.f == nil {
			return childResp{Err: "no profile running"}
		}
		pprof.StopCPUProfile()
		err := p.f.Close()
		p.f = nil
		if err != nil {
			return childResp{Err: err.Error()}
		}
		return childResp{}
	}
	if p.f != nil {
		return childResp{Err: "a profile runs already"}
	}
	f, err := os.Create(req.Addr)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		return childResp{Err: err.Error()}
	}
	p.f = f
	return childResp{}
}
