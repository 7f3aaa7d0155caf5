package http_test

// BenchmarkRESTList: the authenticated service list (GET /v1/provider/api-services, first page
// of 20 in a tenant of 20 services) under fixed concurrency, beside a floor served in the same
// run: bare Echo + pgx (pgxpool), the same page query on the same database and data, JSON of
// the same rows, no authentication. Both are driven by the same Go load generator:
// IMPRUN_BENCH_REST_CLIENTS clients (default 16) each sending requests back to back over
// keep-alive connections for IMPRUN_BENCH_REST_SECONDS (default 3) per round; floor and real
// handler alternate for IMPRUN_BENCH_REST_ROUNDS rounds each (default 2), so drift of the shared
// machine hits both (on a noisy machine more, shorter rounds average it better). Printed:
// req/s and p99 of each and the ratio, and the CPU time and heap allocations this process spent
// per request on each side (handler, load generator and runtime; Postgres not included), which
// a loaded machine disturbs far less than throughput.
//
// The real handler runs as in production: the OIDC token verified by go-oidc against the
// project's issuer, the user and membership loaded (or served from the principal cache), the
// tenant scope, the access log at info level (to a discarding handler, so the log's I/O is not
// what is measured, only its formatting).
//
// IMPRUN_BENCH_CPUPROFILE=<file> profiles the first round of each side (the whole process, load
// generator included): the real handler's CPU to <file> and its mutex and block profiles to
// <file>.mutex and <file>.block, the floor's CPU to <file>.floor.
// Raise IMPRUN_BENCH_REST_SECONDS for more samples; read with go tool pprof -top http.test <file>.
//
// Run: go test -run '^$' -bench BenchmarkRESTList -benchtime 1x ./http/

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store/storetest"
)

func BenchmarkRESTList(b *testing.B) {
	clients := restEnvInt(b, "IMPRUN_BENCH_REST_CLIENTS", 16)
	seconds := restEnvInt(b, "IMPRUN_BENCH_REST_SECONDS", 3)
	rounds := restEnvInt(b, "IMPRUN_BENCH_REST_ROUNDS", 2)

	env := apitest.New(b, apitest.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if r := env.As(opsP).Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": devP.Email}); r.Status != http.StatusCreated {
		b.Fatalf("tenant: %d %s", r.Status, r.Body)
	}
	seedServices(b, env, "acme", "svc", 20)
	tenantID := uuid.MustParse(env.DB.TenantID(b, "acme"))
	floorURL := startRESTFloor(b, env.DBURL, tenantID)
	token := env.Token(devP)
	realURL := env.URL + prov + "/api-services?limit=20"

	transport := &http.Transport{MaxIdleConnsPerHost: 2 * clients, MaxConnsPerHost: 2 * clients}
	b.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	get := func(url, bearer string) error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n < 100 {
			return fmt.Errorf("GET %s: %d (%d bytes)", url, resp.StatusCode, n)
		}
		return nil
	}
	// Both answer the same 20 rows.
	for _, u := range []struct{ url, token string }{{floorURL, ""}, {realURL, token}} {
		if err := get(u.url, u.token); err != nil {
			b.Fatal(err)
		}
	}
	round := time.Duration(seconds) * time.Second
	// Warm-up: connections, the principal cache, the query plans.
	if _, err := loadRound(clients, time.Second/2, func() error { return get(floorURL, "") }); err != nil {
		b.Fatal(err)
	}
	if _, err := loadRound(clients, time.Second/2, func() error { return get(realURL, token) }); err != nil {
		b.Fatal(err)
	}

	var floor, real loadFigures
	profile := os.Getenv("IMPRUN_BENCH_CPUPROFILE")
	b.ResetTimer()
	for i := range b.N {
		for j := range rounds {
			profiled := func(path string, contention bool) (stop func()) {
				if profile == "" || i+j > 0 {
					return func() {}
				}
				return startRoundProfiles(b, path, contention)
			}
			stop := profiled(profile+".floor", false)
			f, err := loadRound(clients, round, func() error { return get(floorURL, "") })
			stop()
			if err != nil {
				b.Fatal(err)
			}
			floor.add(f)
			stop = profiled(profile, true)
			r, err := loadRound(clients, round, func() error { return get(realURL, token) })
			stop()
			if err != nil {
				b.Fatal(err)
			}
			real.add(r)
		}
	}
	b.StopTimer()
	fr, rr := floor.rps(), real.rps()
	fp, rp := floor.p99(), real.p99()
	b.ReportMetric(rr, "req/s")
	b.ReportMetric(ms(rp), "p99-ms")
	b.ReportMetric(fr, "floor-req/s")
	b.ReportMetric(ms(fp), "floor-p99-ms")
	b.ReportMetric(rr/fr, "rps-x-floor")
	b.ReportMetric(real.cpuPerReq(), "cpu-us/req")
	b.ReportMetric(floor.cpuPerReq(), "floor-cpu-us/req")
	b.ReportMetric(real.perReq(real.allocs), "allocs/req")
	b.ReportMetric(floor.perReq(floor.allocs), "floor-allocs/req")
	b.Logf("real: %.0f req/s p99 %.1f ms, %.0f µs CPU %.0f allocs %.1f KB per req | floor (bare Echo + pgx): %.0f req/s p99 %.1f ms, %.0f µs CPU %.0f allocs %.1f KB per req | %.2fx floor (aim >= 0.8x, p99 < 50 ms); %d clients, %d rounds of %s each",
		rr, ms(rp), real.cpuPerReq(), real.perReq(real.allocs), real.perReq(real.bytes)/1024,
		fr, ms(fp), floor.cpuPerReq(), floor.perReq(floor.allocs), floor.perReq(floor.bytes)/1024, rr/fr, clients, rounds, round)
}

// loadFigures accumulates rounds of one side.
type loadFigures struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration // user + system time of the process
	allocs  uint64        // heap objects allocated
	bytes   uint64        // heap bytes allocated
	lat     []time.Duration
}

func (l *loadFigures) add(o loadFigures) {
	l.n += o.n
	l.elapsed += o.elapsed
	l.cpu += o.cpu
	l.allocs += o.allocs
	l.bytes += o.bytes
	l.lat = append(l.lat, o.lat...)
}

func (l *loadFigures) cpuPerReq() float64 {
	return float64(l.cpu) / float64(time.Microsecond) / float64(max(l.n, 1))
}

func (l *loadFigures) perReq(v uint64) float64 { return float64(v) / float64(max(l.n, 1)) }

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (l *loadFigures) rps() float64 { return float64(l.n) / l.elapsed.Seconds() }

func (l *loadFigures) p99() time.Duration {
	s := slices.Clone(l.lat)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, (len(s)*99+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// loadRound runs clients goroutines sending requests back to back for d.
func loadRound(clients int, d time.Duration, do func() error) (loadFigures, error) {
	var mu sync.Mutex
	var out loadFigures
	var firstErr error
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	cpu := processCPU()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			var err error
			for time.Now().Before(deadline) {
				t := time.Now()
				if err = do(); err != nil {
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			out.n += len(lat)
			out.lat = append(out.lat, lat...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	out.cpu = processCPU() - cpu
	allocs, bytes := mem.Mallocs, mem.TotalAlloc
	runtime.ReadMemStats(&mem)
	out.allocs, out.bytes = mem.Mallocs-allocs, mem.TotalAlloc-bytes
	return out, firstErr
}

// startRESTFloor serves GET /floor: the page query through pgxpool, as JSON.
func startRESTFloor(b *testing.B, dbURL string, tenantID uuid.UUID) string {
	b.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/floor", func(c echo.Context) error {
		rows, err := storetest.ServicePageFloor(c.Request().Context(), pool, tenantID, 20)
		if err != nil {
			return err
		}
		var next *string
		if len(rows) > 20 {
			rows = rows[:20]
			s := "next"
			next = &s
		}
		return c.JSON(http.StatusOK, struct {
			Items      []models.APIService `json:"items"`
			NextCursor *string             `json:"next_cursor"`
		}{rows, next})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: e}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String() + "/floor"
}

// startRoundProfiles starts the CPU profile to path and, with contention, records mutex
// contention and blocking, until the returned func, which writes them. The contention profiles
// are cumulative, so only one round may record them.
func startRoundProfiles(b *testing.B, path string, contention bool) (stop func()) {
	b.Helper()
	cpu, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		b.Fatal(err)
	}
	if contention {
		runtime.SetMutexProfileFraction(5)
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	}
	return func() {
		pprof.StopCPUProfile()
		_ = cpu.Close()
		if !contention {
			return
		}
		runtime.SetMutexProfileFraction(0)
		runtime.SetBlockProfileRate(0)
		for _, name := range []string{"mutex", "block"} {
			f, err := os.Create(path + "." + name)
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.Lookup(name).WriteTo(f, 0)
			_ = f.Close()
		}
	}
}

func restEnvInt(b *testing.B, name string, def int) int {
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
