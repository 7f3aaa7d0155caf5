package nginx

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newServer(t *testing.T, dir string, listens ...Listen) *Server {
	t.Helper()
	s, err := New(Options{Dir: dir, WorkerProcesses: "1", ConfirmTimeout: 5 * time.Second, Listens: listens})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop(5 * time.Second) })
	return s
}

// site serves one host on addr with a fixed body.
func site(id, addr, host, body string) Site {
	return Site{ID: id, Listens: []Listen{{Addr: addr}}, Files: map[string][]byte{
		"publish.conf": []byte(fmt.Sprintf("server {\n    listen %s;\n    server_name %s;\n    location / { return 200 %q; }\n}\n", addr, host, body)),
	}}
}

func get(t *testing.T, addr, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	require.NoError(t, err)
	req.Host = host
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestApplyRefusesOneSiteAndKeepsTheOthers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := newServer(t, t.TempDir(), Listen{Addr: addr})

	refused, err := s.Start(ctx, []Site{site("a", addr, "a.test", "A1")})
	require.NoError(t, err)
	require.Empty(t, refused)
	code, body := get(t, addr, "a.test")
	require.Equal(t, 200, code)
	require.Equal(t, "A1", body)
	code, _ = get(t, addr, "unknown.test")
	require.Equal(t, 404, code, "a host no site serves gets the default server")

	// b is refused by nginx -t (an upstream host that does not resolve); a changes and loads.
	bad := Site{ID: "b", Listens: []Listen{{Addr: addr}}, Files: map[string][]byte{"publish.conf": []byte(
		"upstream b_up { server does-not-exist.invalid:80; }\nserver { listen " + addr + "; server_name b.test; location / { proxy_pass http://b_up; } }\n")}}
	gen := s.Generation()
	refused, err = s.Apply(ctx, []Site{site("a", addr, "a.test", "A2"), bad})
	require.NoError(t, err)
	require.Contains(t, refused, "b")
	require.Contains(t, refused["b"].Error(), "does-not-exist.invalid")
	require.Contains(t, refused["b"].Error(), "sites/b/publish.conf")
	require.NotEqual(t, gen, s.Generation())
	_, body = get(t, addr, "a.test")
	require.Equal(t, "A2", body)

	// Nothing changed: no reload.
	gen = s.Generation()
	refused, err = s.Apply(ctx, []Site{site("a", addr, "a.test", "A2")})
	require.NoError(t, err)
	require.Empty(t, refused)
	require.Equal(t, gen, s.Generation())

	// A change of a that nginx refuses keeps the previous a serving.
	broken := site("a", addr, "a.test", "A3")
	broken.Files["publish.conf"] = append(broken.Files["publish.conf"], []byte("this is not nginx;\n")...)
	refused, err = s.Apply(ctx, []Site{broken})
	require.NoError(t, err)
	require.Contains(t, refused, "a")
	_, body = get(t, addr, "a.test")
	require.Equal(t, "A2", body)

	// Removing the last site: its host falls to the default server of the configured socket.
	_, err = s.Apply(ctx, nil)
	require.NoError(t, err)
	code, _ = get(t, addr, "a.test")
	require.Equal(t, 404, code)
}

func TestApplyRefusesAListenerInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	s := newServer(t, t.TempDir())
	_, err = s.Start(ctx, []Site{site("a", addr, "a.test", "A")})
	require.NoError(t, err)

	refused, err := s.Apply(ctx, []Site{site("a", addr, "a.test", "A"), site("b", taken.Addr().String(), "b.test", "B")})
	require.NoError(t, err)
	require.Contains(t, refused, "b")
	require.Contains(t, refused["b"].Error(), taken.Addr().String())
	_, body := get(t, addr, "a.test")
	require.Equal(t, "A", body)
}

func TestRestartedAgentAdoptsRunningNginx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	first, err := New(Options{Dir: dir, WorkerProcesses: "1"})
	require.NoError(t, err)
	_, err = first.Start(ctx, []Site{site("a", addr, "a.test", "A")})
	require.NoError(t, err)
	gen := first.Generation()
	pid := first.proc.pid

	// A second Server on the same directory (the agent restarted) adopts the master and, with
	// the same sites, does not reload.
	second := newServer(t, dir)
	refused, err := second.Start(ctx, []Site{site("a", addr, "a.test", "A")})
	require.NoError(t, err)
	require.Empty(t, refused)
	require.Equal(t, pid, second.proc.pid)
	require.Equal(t, gen, second.Generation())
	_, body := get(t, addr, "a.test")
	require.Equal(t, "A", body)

	require.NoError(t, second.Stop(5*time.Second))
	require.False(t, first.proc.alive())
	_, err = os.Stat(filepath.Join(dir, "current", "nginx.conf"))
	require.NoError(t, err, "the tree stays for the next start")
}

func TestTrimMessageKeepsRunes(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("가", maxMessage) // 3 bytes each
	got := trimMessage(long)
	require.True(t, strings.HasSuffix(got, "..."))
	require.True(t, len(got) <= maxMessage+3)
	require.Equal(t, "a?b", trimMessage("a\xffb"))
}

// TestReloadThatNginxRollsBackIsAFailure: when nginx keeps its old configuration because the
// new one cannot bind (found only at reload), the apply fails with nginx's message, the current
// tree points at the last good generation again, and that generation keeps serving.
func TestReloadThatNginxRollsBackIsAFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	s := newServer(t, t.TempDir())
	s.skipBindCheck = true
	_, err = s.Start(ctx, []Site{site("a", addr, "a.test", "A")})
	require.NoError(t, err)
	good := s.Generation()

	_, err = s.Apply(ctx, []Site{site("a", addr, "a.test", "A"), site("b", taken.Addr().String(), "b.test", "B")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "bind()")
	require.Contains(t, err.Error(), taken.Addr().String())
	require.Equal(t, good, s.Generation())
	require.Equal(t, good, s.currentGeneration(), "the current tree is the last good one again")
	require.Equal(t, good, s.queryGeneration(ctx))
	_, body := get(t, addr, "a.test")
	require.Equal(t, "A", body)
}
