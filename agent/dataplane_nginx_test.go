package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/imprun/imprun-server/agent/nginx"
	"github.com/imprun/imprun-server/egress"
	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// nginxSnapshot is the minimal golden snapshot as publish id, with a backend at backend.
func nginxSnapshot(t *testing.T, id, backend string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/golden/minimal/snapshot.json")
	require.NoError(t, err)
	host, port, _ := net.SplitHostPort(backend)
	s := strings.Replace(string(data), "0b6f1c2e-9d3a-4e5f-8a7b-6c5d4e3f2a10", id, 1)
	s = strings.Replace(s, `"host":"10.0.0.12", "port": 9000`, fmt.Sprintf(`"host": %q, "port": %s`, host, port), 1)
	s = strings.Replace(s, `"hostname": "",`, fmt.Sprintf(`"hostname": "%s.example.com",`, id[:8]), 1)
	return []byte(s)
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func deployOf(id, publish string, revision int32, body []byte) *agentv1.ServerMessage {
	return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_DeployCommand{DeployCommand: &agentv1.DeployCommand{
		CommandId: id, PublishId: publish, Revision: revision, Checksum: sum(body), Action: agentv1.DeployAction_DEPLOY_ACTION_APPLY,
		SnapshotPath: fmt.Sprintf("/v1/agent/publishes/%s/revisions/%d", publish, revision),
	}}}
}

func (f *fixture) nginxAgent(t *testing.T, listen string) {
	f.cfg.DataPlane = DataPlaneNginx
	f.cfg.VerifyListen = freeAddr(t)
	f.cfg.Nginx = NginxConfig{Listen: map[int]string{8080: listen}, WorkerProcesses: "1", StopOnExit: true, ConfirmTimeout: 5 * time.Second}
	// The test's backends listen on loopback, which the default egress policy refuses.
	pol, err := egress.Parse([]string{"127.0.0.0/8"}, nil)
	require.NoError(t, err)
	f.cfg.Render.Egress = pol
	t.Cleanup(func() {
		if srv, err := nginx.New(nginx.Options{Dir: filepath.Join(f.stateDir, "nginx")}); err == nil {
			_ = srv.Stop(5 * time.Second)
		}
	})
}

// startNginxAgent runs an agent with an nginx data plane against the fixture and completes its
// connect; cancel stops it.
func (f *fixture) startNginxAgent(t *testing.T) (a *Agent, sess *fakeSession, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	f.bearer("jwt-1")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a, done = f.start(ctx)
	sess = f.session()
	sess.next() // ConnectRequest
	sess.send(connectResponse("jwt-1", "refresh-1", 30))
	return a, sess, cancel, done
}

func (s *fakeSession) deployResult(t *testing.T) *agentv1.DeployResult {
	t.Helper()
	for {
		m := s.next()
		if r := m.GetDeployResult(); r != nil {
			return r
		}
	}
}

// TestAgentNginxBurstIsOneReload: a burst of deploy commands for different publishes costs far
// fewer nginx reloads than commands, and every publish serves once its result says succeeded.
func TestAgentNginxBurstIsOneReload(t *testing.T) {
	t.Parallel()
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok "+r.Host) })}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = backend.Serve(bl) }()
	t.Cleanup(func() { _ = backend.Close() })

	f := newFixture(t)
	listen := freeAddr(t)
	f.nginxAgent(t, listen)
	a, sess, cancel, done := f.startNginxAgent(t)

	const n = 10
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		body := nginxSnapshot(t, id, bl.Addr().String())
		f.extra.Store(fmt.Sprintf("/v1/agent/publishes/%s/revisions/1", id), body)
		sess.send(deployOf(fmt.Sprintf("cmd-%d", i), id, 1, body))
	}
	for i := 0; i < n; i++ {
		res := sess.deployResult(t)
		require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, res.GetStatus(), res.GetMessage())
		req, _ := http.NewRequest(http.MethodGet, "http://"+listen+"/health", nil)
		req.Host = res.GetPublishId()[:8] + ".example.com"
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "publish %s serves once it is answered succeeded", res.GetPublishId())
		require.Contains(t, string(b), "ok ")
	}
	gen := a.nginx.srv.Generation()
	var reloads int
	_, err = fmt.Sscanf(gen, "g%d", &reloads)
	require.NoError(t, err)
	require.Less(t, reloads, n/2, "a burst of %d commands cost %d generations", n, reloads)
	t.Logf("%d deploy commands, %d nginx generations", n, reloads)

	// The applied set the heartbeat reports is what nginx serves.
	require.Len(t, a.st.appliedRevisions(), n)
	cancel()
	require.ErrorIs(t, waitRun(t, done), context.Canceled)
}

// TestAgentNginxUnavailable: without a working nginx the agent says so and answers deploys
// FAILED with the reason; nothing is recorded as applied.
func TestAgentNginxUnavailable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.nginxAgent(t, freeAddr(t))
	f.cfg.Nginx.Binary = "/nonexistent/nginx"
	a, sess, cancel, done := f.startNginxAgent(t)
	id := "0b6f1c2e-9d3a-4e5f-8a7b-6c5d4e3f2a10"
	body := nginxSnapshot(t, id, "127.0.0.1:9")
	f.extra.Store(fmt.Sprintf("/v1/agent/publishes/%s/revisions/1", id), body)
	sess.send(deployOf("cmd-1", id, 1, body))
	res := sess.deployResult(t)
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_FAILED, res.GetStatus())
	require.Contains(t, res.GetMessage(), "nginx data plane unavailable")
	require.Contains(t, res.GetMessage(), "/nonexistent/nginx")
	require.Empty(t, a.st.appliedRevisions())
	cancel()
	require.ErrorIs(t, waitRun(t, done), context.Canceled)
}

// TestAgentNginxRefusesOtherClasses: an nginx agent answers a publish of another gateway class
// FAILED instead of rendering what it cannot serve.
func TestAgentNginxRefusesOtherClasses(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.nginxAgent(t, freeAddr(t))
	_, sess, cancel, done := f.startNginxAgent(t)
	sess.send(f.deployCommand("cmd-1", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum)) // envoy-gateway
	res := sess.deployResult(t)
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_FAILED, res.GetStatus())
	require.Contains(t, res.GetMessage(), "cannot serve gateway class envoy-gateway")
	cancel()
	require.ErrorIs(t, waitRun(t, done), context.Canceled)
}
