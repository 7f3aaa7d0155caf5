package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// fakeServer is a scriptable AgentService: every stream is handed to the test as a fakeSession,
// and the test plays the server's side message by message.
type fakeServer struct {
	agentv1.UnimplementedAgentServiceServer
	sessions chan *fakeSession
}

type fakeSession struct {
	t      *testing.T
	stream agentv1.AgentService_ConnectServer
	recv   chan *agentv1.AgentMessage
	end    chan error

	sendMu     sync.Mutex
	heartbeats atomic.Int32
	lastHB     atomic.Pointer[agentv1.Heartbeat]
}

func (f *fakeServer) Connect(stream agentv1.AgentService_ConnectServer) error {
	s := &fakeSession{stream: stream, recv: make(chan *agentv1.AgentMessage, 64), end: make(chan error, 1)}
	go func() {
		defer close(s.recv)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			// Heartbeats are answered here, like the real server does, so that scripts only
			// deal with commands.
			if hb := m.GetHeartbeat(); hb != nil {
				s.heartbeats.Add(1)
				s.lastHB.Store(hb)
				_ = s.sendMsg(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_HeartbeatAck{HeartbeatAck: &agentv1.HeartbeatAck{ServerTime: timestamppb.Now()}}})
				continue
			}
			s.recv <- m
		}
	}()
	select {
	case f.sessions <- s:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	select {
	case err := <-s.end:
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

func (s *fakeSession) sendMsg(m *agentv1.ServerMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(m)
}

func (s *fakeSession) send(m *agentv1.ServerMessage) {
	s.t.Helper()
	require.NoError(s.t, s.sendMsg(m))
}

// next returns the agent's next non-heartbeat message.
func (s *fakeSession) next() *agentv1.AgentMessage {
	s.t.Helper()
	select {
	case m, ok := <-s.recv:
		require.True(s.t, ok, "agent closed the stream")
		return m
	case <-time.After(10 * time.Second):
		s.t.Fatal("timed out waiting for an agent message")
		return nil
	}
}

// fixture is a fake control plane (gRPC + REST) and an agent configured against it.
type fixture struct {
	t        *testing.T
	srv      *fakeServer
	stateDir string
	cfg      Config

	gs           atomic.Pointer[grpc.Server]
	snapshot     []byte
	snapshotSum  string
	expectBearer atomic.Pointer[string]
	httpRequests atomic.Int32
	extra        sync.Map // snapshot path -> body, served besides f.snapshot
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: &fakeServer{sessions: make(chan *fakeSession)}, stateDir: filepath.Join(t.TempDir(), "state")}
	var err error
	f.snapshot, err = os.ReadFile("testdata/snapshot.json")
	require.NoError(t, err)
	sum := sha256.Sum256(f.snapshot)
	f.snapshotSum = hex.EncodeToString(sum[:])

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f.serve(lis)
	t.Cleanup(func() { f.grpcServer().Stop() })

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.httpRequests.Add(1)
		if want := f.expectBearer.Load(); want == nil || r.Header.Get("Authorization") != "Bearer "+*want {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		if body, ok := f.extra.Load(r.URL.Path); ok {
			_, _ = w.Write(body.([]byte))
			return
		}
		switch r.URL.Path {
		case "/v1/agent/publishes/7f3c2a10-5b1e-4c2d-9a8f-0e1d2c3b4a59/revisions/3":
			_, _ = w.Write(f.snapshot)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(api.Close)

	f.cfg = Config{
		ServerAddr:           lis.Addr().String(),
		APIBaseURL:           api.URL,
		StateDir:             f.stateDir,
		RegistrationToken:    "reg-token",
		Name:                 "edge-1",
		TransportCredentials: insecure.NewCredentials(),
		Logger:               slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		MinBackoff:           10 * time.Millisecond,
		MaxBackoff:           50 * time.Millisecond,
	}
	return f
}

func (f *fixture) bearer(jwt string) { f.expectBearer.Store(&jwt) }

// serve serves the fake control plane's gRPC on lis.
func (f *fixture) serve(lis net.Listener) {
	gs := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(gs, f.srv)
	f.gs.Store(gs)
	go func() { _ = gs.Serve(lis) }()
}

func (f *fixture) grpcServer() *grpc.Server { return f.gs.Load() }

// stopServer stops the gRPC server, closing its connections as a killed process would;
// resumeServer serves again on the same address.
func (f *fixture) stopServer() { f.grpcServer().Stop() }

func (f *fixture) resumeServer() {
	f.t.Helper()
	lis, err := net.Listen("tcp", f.cfg.ServerAddr)
	require.NoError(f.t, err)
	f.serve(lis)
}

// revoke ends the agent's session s with Close{REVOKED} and checks that Run ends with
// ErrRevoked and leaves no goroutine behind.
func revoke(t *testing.T, s *fakeSession, done <-chan error) {
	t.Helper()
	s.next()
	s.send(closeMsg(agentv1.CloseReason_CLOSE_REASON_REVOKED))
	require.ErrorIs(t, waitRun(t, done), ErrRevoked)
	assertNoAgentGoroutines(t)
}

// start runs the agent; the returned channel yields Run's result.
func (f *fixture) start(ctx context.Context) (*Agent, <-chan error) {
	f.t.Helper()
	a, err := New(f.cfg)
	require.NoError(f.t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, done
}

// connected starts the agent and answers its first connect with jwt-1, the bearer the API then
// expects: the agent's session, ready for commands.
func (f *fixture) connected(ctx context.Context) (*fakeSession, <-chan error) {
	f.t.Helper()
	_, done := f.start(ctx)
	s := f.session()
	s.next()
	s.send(connectResponse("jwt-1", "refresh-1", 10))
	f.bearer("jwt-1")
	return s, done
}

func (f *fixture) session() *fakeSession {
	f.t.Helper()
	select {
	case s := <-f.srv.sessions:
		s.t = f.t
		return s
	case <-time.After(10 * time.Second):
		f.t.Fatal("timed out waiting for the agent to connect")
		return nil
	}
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// assertNoAgentGoroutines fails if any goroutine still runs agent code after Run returned.
func assertNoAgentGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "imprun-server/agent.(*Agent)") {
			return
		}
	}
	t.Fatalf("agent goroutines still running after Run returned:\n%s", stacks)
}

func connectResponse(jwt, refresh string, heartbeatSeconds int32) *agentv1.ServerMessage {
	return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_ConnectResponse{ConnectResponse: &agentv1.ConnectResponse{
		AgentId: "agent-1", ClusterId: "cluster-1", ClusterName: "kr-central",
		AgentJwt: jwt, JwtExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
		RefreshSecret: refresh, HeartbeatIntervalSeconds: heartbeatSeconds,
	}}}
}

func closeMsg(reason agentv1.CloseReason) *agentv1.ServerMessage {
	return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_Close{Close: &agentv1.Close{Reason: reason, Message: "test"}}}
}

const testPublish = "7f3c2a10-5b1e-4c2d-9a8f-0e1d2c3b4a59"

func (f *fixture) deployCommand(id string, action agentv1.DeployAction, revision int32, checksum string) *agentv1.ServerMessage {
	path := fmt.Sprintf("/v1/agent/publishes/%s/revisions/%d", testPublish, revision)
	if action == agentv1.DeployAction_DEPLOY_ACTION_WITHDRAW {
		path = ""
	}
	return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_DeployCommand{DeployCommand: &agentv1.DeployCommand{
		CommandId: id, PublishId: testPublish, Revision: revision, Checksum: checksum, Action: action, SnapshotPath: path,
	}}}
}

func upsert(id string, version int64, secret string) *agentv1.ServerMessage {
	return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_CredentialUpsert{CredentialUpsert: &agentv1.CredentialUpsert{
		CommandId: id, CredentialId: "cred-1", Version: version, Type: agentv1.CredentialType_CREDENTIAL_TYPE_API_KEY,
		KeyPrefix: "imp_ab12cd34", SecretHash: sha(secret), ClientAppId: "app-1",
		Grants: []*agentv1.CredentialGrant{{PublishId: testPublish, PlanId: "gold", Limits: &agentv1.PlanLimits{RequestsPerSecond: 100}}},
	}}}
}

// TestAgentLifecycle walks an agent through its life against a fake control plane: register,
// deploy, redelivery, a bad snapshot, credentials, token rotation, reconnect, withdraw, revoke.
func TestAgentLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, done := f.start(ctx)

	// Registration.
	s1 := f.session()
	req := s1.next().GetConnectRequest()
	require.NotNil(t, req)
	assert.Equal(t, "reg-token", req.GetRegistrationToken())
	assert.Equal(t, "edge-1", req.GetAgentName())
	assert.Equal(t, DefaultVersion, req.GetAgentVersion())
	assert.Empty(t, req.GetApplied())
	s1.send(connectResponse("jwt-1", "refresh-1", 1))
	f.bearer("jwt-1")

	// Deploy, fetching the snapshot with the JWT from the ConnectResponse.
	s1.send(f.deployCommand("cmd-1", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	first := s1.next().GetDeployResult()
	require.NotNil(t, first)
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, first.GetStatus(), first.GetMessage())
	assert.Equal(t, "cmd-1", first.GetCommandId())
	assert.Equal(t, int32(3), first.GetRevision())
	assert.Equal(t, f.snapshotSum, first.GetChecksum())
	require.Len(t, first.GetAppliedResources(), 9)
	for _, r := range first.GetAppliedResources() {
		assert.Equal(t, agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_CREATED, r.GetStatus(), r.GetName())
		assert.Equal(t, "imprun-gateway", r.GetNamespace())
	}
	pubDir := filepath.Join(f.stateDir, "publishes", testPublish)
	current, err := os.ReadFile(filepath.Join(pubDir, "current"))
	require.NoError(t, err)
	assert.Equal(t, "rev-3.yaml\n", string(current))
	assert.FileExists(t, filepath.Join(pubDir, "rev-3.yaml"))
	id, err := LoadIdentity(f.stateDir)
	require.NoError(t, err)
	assert.Equal(t, "agent-1", id.AgentID)
	assert.Equal(t, "jwt-1", id.AgentJWT)
	assert.Equal(t, "refresh-1", id.RefreshSecret)

	// A redelivered command gets the same answer, without another fetch.
	fetches := f.httpRequests.Load()
	s1.send(f.deployCommand("cmd-1", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	again := s1.next().GetDeployResult()
	assert.True(t, proto.Equal(first, again), "redelivery answered differently:\n%v\n%v", first, again)
	assert.Equal(t, fetches, f.httpRequests.Load())

	// A snapshot that does not match its checksum is refused.
	s1.send(f.deployCommand("cmd-2", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, strings.Repeat("0", 64)))
	bad := s1.next().GetDeployResult()
	assert.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_FAILED, bad.GetStatus())
	assert.Contains(t, bad.GetMessage(), "checksum mismatch")
	assert.Empty(t, bad.GetAppliedResources())

	// Credentials: upsert, a stale upsert, revoke; each acknowledged.
	s1.send(upsert("cmd-3", 2, "secret-2"))
	ack := s1.next().GetCommandAck()
	assertProto(t, &agentv1.CommandAck{CommandId: "cmd-3", Success: true}, ack)
	live := a.Verifier()
	assert.True(t, live.VerifyAPIKey(testPublish, "imp_ab12cd34.secret-2").Allowed)
	onDisk, err := OpenCredentialStore(f.stateDir)
	require.NoError(t, err)
	assert.True(t, NewVerifier(onDisk).VerifyAPIKey(testPublish, "imp_ab12cd34.secret-2").Allowed, "credentials.json is what agent verify reads")
	creds, err := os.ReadFile(filepath.Join(pubDir, "credentials.yaml"))
	require.NoError(t, err)
	assert.Contains(t, string(creds), sha("secret-2"))
	assert.NotContains(t, string(creds), "secret-2\n")

	s1.send(upsert("cmd-4", 1, "secret-1"))
	ack = s1.next().GetCommandAck()
	assert.True(t, ack.GetSuccess())
	assert.Equal(t, "ignored: stale version", ack.GetMessage())
	assert.False(t, live.VerifyAPIKey(testPublish, "imp_ab12cd34.secret-1").Allowed)

	s1.send(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_CredentialRevoke{CredentialRevoke: &agentv1.CredentialRevoke{
		CommandId: "cmd-5", CredentialId: "cred-1", Version: 3, Reason: "rotated",
	}}})
	ack = s1.next().GetCommandAck()
	assertProto(t, &agentv1.CommandAck{CommandId: "cmd-5", Success: true}, ack)
	assert.Equal(t, DenyRevoked, live.VerifyAPIKey(testPublish, "imp_ab12cd34.secret-2").Reason)

	// Heartbeats carry the applied revision.
	require.Eventually(t, func() bool { return s1.heartbeats.Load() > 0 }, 5*time.Second, 20*time.Millisecond)
	hb := s1.lastHB.Load()
	require.Len(t, hb.GetApplied(), 1)
	assert.Equal(t, testPublish, hb.GetApplied()[0].GetPublishId())
	assert.Equal(t, int32(3), hb.GetApplied()[0].GetRevision())
	assert.Equal(t, f.snapshotSum, hb.GetApplied()[0].GetChecksum())

	// Token rotation is persisted before it is acknowledged.
	s1.send(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_ReplaceToken{ReplaceToken: &agentv1.ReplaceToken{
		CommandId: "cmd-6", AgentJwt: "jwt-2", JwtExpiresAt: timestamppb.New(time.Now().Add(time.Hour)), RefreshSecret: "refresh-2",
	}}})
	replaced := s1.next().GetTokenReplaced()
	assertProto(t, &agentv1.TokenReplaced{CommandId: "cmd-6", Success: true}, replaced)
	id, err = LoadIdentity(f.stateDir)
	require.NoError(t, err)
	assert.Equal(t, "jwt-2", id.AgentJWT)
	assert.Equal(t, "refresh-2", id.RefreshSecret)
	f.bearer("jwt-2")

	// The server drops the stream; the agent reconnects with the rotated JWT and its state.
	s1.end <- status.Error(codes.Unavailable, "replica restarting")
	s2 := f.session()
	req = s2.next().GetConnectRequest()
	require.NotNil(t, req)
	assert.Equal(t, "jwt-2", req.GetAgentJwt())
	assert.Equal(t, "agent-1", req.GetAgentId())
	require.Len(t, req.GetApplied(), 1)
	assert.Equal(t, int32(3), req.GetApplied()[0].GetRevision())
	s2.send(connectResponse("jwt-2", "", 1))

	// A command redelivered on the new stream still gets the recorded answer.
	s2.send(f.deployCommand("cmd-1", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	assert.True(t, proto.Equal(first, s2.next().GetDeployResult()))

	// Withdraw removes the rendered files and reports what went.
	s2.send(f.deployCommand("cmd-7", agentv1.DeployAction_DEPLOY_ACTION_WITHDRAW, 3, ""))
	withdrawn := s2.next().GetDeployResult()
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, withdrawn.GetStatus(), withdrawn.GetMessage())
	require.Len(t, withdrawn.GetAppliedResources(), 9)
	for _, r := range withdrawn.GetAppliedResources() {
		assert.Equal(t, agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_DELETED, r.GetStatus())
	}
	assert.NoDirExists(t, pubDir)

	// Revocation is final: identity gone, Run returns ErrRevoked.
	s2.send(closeMsg(agentv1.CloseReason_CLOSE_REASON_REVOKED))
	err = waitRun(t, done)
	require.ErrorIs(t, err, ErrRevoked)
	assert.NoFileExists(t, filepath.Join(f.stateDir, identityFile))
	_, ok := a.Identity()
	assert.False(t, ok)
	assertNoAgentGoroutines(t)
}

// assertProto compares protobuf messages by content (assert.Equal would compare internals).
func assertProto(t *testing.T, want, got proto.Message) {
	t.Helper()
	if !proto.Equal(want, got) {
		t.Errorf("message mismatch:\nwant %v\ngot  %v", want, got)
	}
}

// TestAgentRedeployReportsUnchanged checks that re-applying the same snapshot under a new
// command reports every resource unchanged.
func TestAgentRedeployReportsUnchanged(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, done := f.connected(ctx)
	s.send(f.deployCommand("a", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, s.next().GetDeployResult().GetStatus())
	s.send(f.deployCommand("b", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	res := s.next().GetDeployResult()
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, res.GetStatus())
	for _, r := range res.GetAppliedResources() {
		assert.Equal(t, agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_UNCHANGED, r.GetStatus())
	}
	// A snapshot the API refuses to serve fails the command with the HTTP status.
	f.bearer("someone-else")
	s.send(f.deployCommand("c", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	res = s.next().GetDeployResult()
	assert.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_FAILED, res.GetStatus())
	assert.Contains(t, res.GetMessage(), "HTTP 401")

	cancel()
	assert.ErrorIs(t, waitRun(t, done), context.Canceled)
	assertNoAgentGoroutines(t)

	// A crash may leave the pointer torn (it is written without an fsync of its own): the
	// next start names the applied file in it again.
	pointer := filepath.Join(f.stateDir, "publishes", testPublish, "current")
	require.NoError(t, os.WriteFile(pointer, nil, 0o600))
	_, err := New(f.cfg)
	require.NoError(t, err)
	got, err := os.ReadFile(pointer)
	require.NoError(t, err)
	assert.Equal(t, "rev-3.yaml\n", string(got))

	// A revision file the crash tore (it too is written without an fsync) is reported as drift
	// when the agent connects, so the control plane deploys it again; applying it ends it.
	require.NoError(t, os.WriteFile(filepath.Join(f.stateDir, "publishes", testPublish, "rev-3.yaml"), []byte("torn"), 0o600))
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	a, done := f.start(ctx)
	s = f.session()
	applied := s.next().GetConnectRequest().GetApplied()
	require.Len(t, applied, 1)
	assert.Equal(t, "rendered file rev-3.yaml is not what was rendered", applied[0].GetDrift())
	s.send(connectResponse("jwt-2", "refresh-2", 10))
	f.bearer("jwt-2")
	s.send(f.deployCommand("d", agentv1.DeployAction_DEPLOY_ACTION_APPLY, 3, f.snapshotSum))
	require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, s.next().GetDeployResult().GetStatus())
	applied = a.appliedState()
	require.Len(t, applied, 1)
	assert.Empty(t, applied[0].GetDrift())
	cancel()
	assert.ErrorIs(t, waitRun(t, done), context.Canceled)
}

// TestAgentKeepsThePreviousRevisionFile: a publish's directory keeps the applied revision's
// file and the one before it (for an operator's rollback); older ones are removed, also those a
// crash left behind without a record.
func TestAgentKeepsThePreviousRevisionFile(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, done := f.connected(ctx)
	var snap map[string]any
	require.NoError(t, json.Unmarshal(f.snapshot, &snap))
	dir := filepath.Join(f.stateDir, "publishes", testPublish)
	for rev := int32(3); rev <= 6; rev++ {
		sum := f.snapshotSum
		if rev > 3 {
			snap["revision"] = rev
			body, err := json.Marshal(snap)
			require.NoError(t, err)
			f.extra.Store(fmt.Sprintf("/v1/agent/publishes/%s/revisions/%d", testPublish, rev), body)
			h := sha256.Sum256(body)
			sum = hex.EncodeToString(h[:])
		}
		if rev == 5 {
			// A file no record names, as a crash between rendering and recording leaves it.
			require.NoError(t, os.WriteFile(filepath.Join(dir, "rev-99.yaml"), []byte("left over"), 0o600))
		}
		s.send(f.deployCommand(fmt.Sprint("cmd-", rev), agentv1.DeployAction_DEPLOY_ACTION_APPLY, rev, sum))
		res := s.next().GetDeployResult()
		require.Equal(t, agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, res.GetStatus(), res.GetMessage())
		var names []string
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "rev-") {
				names = append(names, e.Name())
			}
		}
		want := []string{fmt.Sprintf("rev-%d.yaml", rev)}
		if rev > 3 {
			want = append(want, fmt.Sprintf("rev-%d.yaml", rev-1))
		}
		assert.ElementsMatch(t, want, names, "revision %d", rev)
	}
	cancel()
	assert.ErrorIs(t, waitRun(t, done), context.Canceled)
}

// TestAgentFallsBackToRefreshSecret: a refused JWT makes the agent try agent_id +
// refresh_secret at once, and an expired JWT is not even tried.
func TestAgentFallsBackToRefreshSecret(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, SaveIdentity(f.stateDir, &Identity{
		AgentID: "agent-1", ClusterID: "cluster-1", AgentJWT: "jwt-old",
		JWTExpiresAt: time.Now().Add(time.Hour), RefreshSecret: "refresh-old",
	}))
	f.cfg.RegistrationToken = "" // registered already; must not be needed
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, done := f.start(ctx)

	s := f.session()
	assert.Equal(t, "jwt-old", s.next().GetConnectRequest().GetAgentJwt())
	s.end <- status.Error(codes.Unauthenticated, "unauthenticated")

	s = f.session()
	req := s.next().GetConnectRequest()
	assert.Equal(t, "refresh-old", req.GetRefreshSecret())
	assert.Equal(t, "agent-1", req.GetAgentId())
	s.send(connectResponse("jwt-new", "refresh-new", 10))
	require.Eventually(t, func() bool {
		id, err := LoadIdentity(f.stateDir)
		return err == nil && id != nil && id.AgentJWT == "jwt-new" && id.RefreshSecret == "refresh-new"
	}, 5*time.Second, 10*time.Millisecond)

	// A server shutting down is followed by a reconnect with the new JWT.
	s.send(closeMsg(agentv1.CloseReason_CLOSE_REASON_SHUTDOWN))
	s = f.session()
	assert.Equal(t, "jwt-new", s.next().GetConnectRequest().GetAgentJwt())
	s.send(closeMsg(agentv1.CloseReason_CLOSE_REASON_REVOKED))
	require.ErrorIs(t, waitRun(t, done), ErrRevoked)

	// With an expired JWT the first attempt uses the refresh secret.
	f2 := newFixture(t)
	require.NoError(t, SaveIdentity(f2.stateDir, &Identity{
		AgentID: "agent-1", AgentJWT: "jwt-expired", JWTExpiresAt: time.Now().Add(-time.Minute), RefreshSecret: "refresh-1",
	}))
	_, done2 := f2.start(ctx)
	s = f2.session()
	assert.Equal(t, "refresh-1", s.next().GetConnectRequest().GetRefreshSecret())
	s.send(closeMsg(agentv1.CloseReason_CLOSE_REASON_REVOKED))
	require.ErrorIs(t, waitRun(t, done2), ErrRevoked)
	assertNoAgentGoroutines(t)
}

// TestAgentChannelBacksOffWithinTheAgentsBounds: while the server is down, the gRPC channel
// tries to connect again within the agent's backoff bounds (gRPC's own default starts at 1 s
// and grows to 120 s), and the agent is back once the server is.
func TestAgentChannelBacksOffWithinTheAgentsBounds(t *testing.T) {
	f := newFixture(t)
	f.cfg.MinBackoff, f.cfg.MaxBackoff = 20*time.Millisecond, 100*time.Millisecond
	var dials atomic.Int32
	f.cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, done := f.connected(ctx)

	f.stopServer()
	before := dials.Load()
	time.Sleep(1500 * time.Millisecond)
	during := dials.Load() - before
	assert.GreaterOrEqual(t, during, int32(5), "connection attempts in 1.5 s with a backoff of at most 100 ms (gRPC's default makes 2)")
	f.resumeServer()
	revoke(t, f.session(), done)
}

func TestAgentRegistrationRefused(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, done := f.start(ctx)
	s := f.session()
	assert.Equal(t, "reg-token", s.next().GetConnectRequest().GetRegistrationToken())
	s.end <- status.Error(codes.Unauthenticated, "unauthenticated")
	err := waitRun(t, done)
	require.ErrorIs(t, err, ErrRegistrationRefused)
	assertNoAgentGoroutines(t)
}

func TestAgentNotRegistered(t *testing.T) {
	f := newFixture(t)
	f.cfg.RegistrationToken = ""
	_, done := f.start(context.Background())
	require.ErrorIs(t, waitRun(t, done), ErrNotRegistered)
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := New(Config{APIBaseURL: "ftp://x"})
	require.Error(t, err)
	for _, want := range []string{"server address is required", "must be an absolute http(s) URL", "state directory is required", "transport credentials are required"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestSnapshotURL(t *testing.T) {
	t.Parallel()
	a := &Agent{cfg: Config{APIBaseURL: "https://api.example.com/base/"}}
	got, err := a.snapshotURL("/v1/agent/publishes/p/revisions/1")
	require.NoError(t, err)
	assert.Equal(t, "https://api.example.com/base/v1/agent/publishes/p/revisions/1", got)
	for _, bad := range []string{"", "v1/x", "//evil.example.com/x", "https://evil.example.com/x", "/v1/../../etc"} {
		_, err := a.snapshotURL(bad)
		assert.Error(t, err, bad)
	}
}
