package nginx

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkApply: the cost of one apply that changes one publish, on a tree of 1, 100 and 1,000
// publishes, beside a floor measured in the same run: the bare minimum nginx needs for the same
// change on the same tree (rewrite the one file in place, `nginx -t`, SIGHUP, wait until a fresh
// connection is served by the new workers). The apply adds what makes it safe: a staged
// generation, attribution of errors, the bind check, the atomic swap and the wait for the old
// workers to stop accepting.
//
// Run: go test -run '^$' -bench BenchmarkApply -benchtime 10x ./agent/nginx/
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("publishes=%d", n), func(b *testing.B) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
			sites := make([]Site, n, n+1)
			for i := range sites {
				sites[i] = benchSite(i, addr, 0)
			}
			sites = append(sites, benchCredentials(1000))
			ctx := context.Background()

			// The floor: a hand-driven nginx on an equivalent tree.
			floorAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
			floorSites := make([]Site, n, n+1)
			for i := range floorSites {
				floorSites[i] = benchSite(i, floorAddr, 0)
			}
			floorSites = append(floorSites, benchCredentials(1000))
			floor := newFloor(b, floorSites)

			s, err := New(Options{Dir: b.TempDir(), WorkerProcesses: "1"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Stop(5 * time.Second) })
			if refused, err := s.Start(ctx, sites); err != nil || len(refused) > 0 {
				b.Fatal(err, refused)
			}

			var applies, floors []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sites[0] = benchSite(0, addr, i+1)
				start := time.Now()
				if refused, err := s.Apply(ctx, sites); err != nil || len(refused) > 0 {
					b.Fatal(err, refused)
				}
				applies = append(applies, time.Since(start))
				floors = append(floors, floor.reload(b, i+1))
			}
			b.StopTimer()
			a50, f50 := median(applies), median(floors)
			b.ReportMetric(float64(a50)/float64(time.Millisecond), "apply-ms")
			b.ReportMetric(float64(f50)/float64(time.Millisecond), "floor-ms")
			b.ReportMetric(float64(a50)/float64(f50), "x-floor")
			b.Logf("%d publishes: apply p50 %s, floor (nginx -t + SIGHUP + new workers) p50 %s, %.2fx", n, a50.Round(time.Millisecond), f50.Round(time.Millisecond), float64(a50)/float64(f50))
		})
	}
}

func benchSite(i int, addr string, version int) Site {
	return Site{ID: fmt.Sprintf("pub-%04d", i), Listens: []Listen{{Addr: addr}}, Files: map[string][]byte{
		"publish.conf": []byte(fmt.Sprintf("upstream up_%d { server 127.0.0.1:9; }\nserver {\n    listen %s;\n    server_name p%d.example.com;\n    location /v1 { proxy_pass http://up_%d; }\n    location / { return 200 \"v%d\"; }\n}\n", i, addr, i, i, version)),
	}}
}

// benchCredentials is the agent's credential map with n keys, as the agent renders it.
func benchCredentials(n int) Site {
	var b strings.Builder
	b.WriteString("map $http_x_api_key $imprun_credential {\n    default \"\";\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "    \"~^imp_%08d\\.\" \"cred-%d:%064x\";\n", i, i, i)
	}
	b.WriteString("}\n")
	return Site{ID: "imprun-credentials", Files: map[string][]byte{"credentials.conf": []byte(b.String())}}
}

// floorNginx is an nginx driven by hand, as little as a reload can be.
type floorNginx struct {
	s     *Server // only for its paths and the status query
	dir   string  // the tree
	sites []Site
	pid   int
}

func newFloor(b *testing.B, sites []Site) *floorNginx {
	b.Helper()
	s, err := New(Options{Dir: b.TempDir(), WorkerProcesses: "1"})
	if err != nil {
		b.Fatal(err)
	}
	dir, err := s.writeGeneration("g000000", sites)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.swapCurrent("g000000"); err != nil {
		b.Fatal(err)
	}
	p, err := startProcess(s.opts.Binary, s.opts.Dir, s.errorLog())
	if err != nil {
		b.Fatal(err)
	}
	s.proc = p
	b.Cleanup(func() { _ = p.stop(5 * time.Second) })
	f := &floorNginx{s: s, dir: dir, sites: sites, pid: p.pid}
	for s.queryGeneration(context.Background()) != "g000000" {
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

func (f *floorNginx) reload(b *testing.B, version int) time.Duration {
	b.Helper()
	start := time.Now()
	site := benchSite(0, f.sites[0].Listens[0].Addr, version)
	if err := os.WriteFile(filepath.Join(f.dir, "sites", site.ID, "publish.conf"), site.Files["publish.conf"], 0o644); err != nil {
		b.Fatal(err)
	}
	gen := fmt.Sprintf("g%06d", version)
	f.sites[0] = site
	// The generation marker lives in the main file; rewriting it is part of any reload.
	if err := os.WriteFile(filepath.Join(f.dir, "nginx.conf"), f.s.mainConfig(gen, f.sites), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(f.s.opts.Binary, "-t", "-q", "-p", f.s.opts.Dir+"/", "-c", filepath.Join(f.dir, "nginx.conf")).CombinedOutput(); err != nil {
		b.Fatalf("floor nginx -t: %v %s", err, out)
	}
	if err := syscall.Kill(f.pid, syscall.SIGHUP); err != nil {
		b.Fatal(err)
	}
	for f.s.queryGeneration(context.Background()) != gen {
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
