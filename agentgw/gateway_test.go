package agentgw_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

var opsP = apitest.Persona{Email: "ops@example.com", Roles: []string{models.PlatformOperator}}

// fast presence timing: a missing agent is noticed within ~3 s.
var timing = &apitest.AgentTiming{HeartbeatInterval: time.Second, MissedHeartbeats: 3, FlushInterval: 200 * time.Millisecond}

type fixture struct {
	env       *apitest.Env
	ops       *apitest.Client
	clusterID string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, apitest.Options{Agents: timing})
}

// newFixtureWith is newFixture on an env built with opts.
func newFixtureWith(t *testing.T, opts apitest.Options) *fixture {
	t.Helper()
	env := apitest.New(t, opts)
	ops := env.As(opsP)
	r := ops.Post("/v1/operator/clusters", map[string]any{"name": "kr-prod-1", "region": "kr-central",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	return &fixture{env: env, ops: ops, clusterID: r.Map()["id"].(string)}
}

func (f *fixture) token(t *testing.T, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := f.ops.Post("/v1/operator/clusters/"+f.clusterID+"/registration-tokens", body)
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	return r.Map()["token"].(string)
}

// runningAgent is the real reference agent, in process.
type runningAgent struct {
	dir    string
	cancel context.CancelFunc
	done   chan error
	a      *agent.Agent
}

func startAgent(t *testing.T, env *apitest.Env, addr, dir, token, name string) *runningAgent {
	t.Helper()
	a, err := agent.New(agent.Config{ServerAddr: addr, APIBaseURL: env.URL, StateDir: dir, RegistrationToken: token, Name: name,
		TransportCredentials: insecure.NewCredentials(), MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{dir: dir, cancel: cancel, done: make(chan error, 1), a: a}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	return ra
}

func (ra *runningAgent) stop() {
	ra.cancel()
	select {
	case <-ra.done:
	case <-time.After(10 * time.Second):
	}
}

func (ra *runningAgent) identity(t *testing.T) agent.Identity {
	t.Helper()
	var id agent.Identity
	require.Eventually(t, func() bool {
		got, err := agent.LoadIdentity(ra.dir)
		if err != nil || got == nil {
			return false
		}
		id = *got
		return true
	}, 20*time.Second, 50*time.Millisecond, "the agent never registered")
	return id
}

func agentStatus(t *testing.T, env *apitest.Env, id string) string {
	t.Helper()
	st, err := env.DB.AgentStatus(id)
	require.NoError(t, err)
	return st
}

func waitStatus(t *testing.T, env *apitest.Env, id, want string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return agentStatus(t, env, id) == want }, within, 50*time.Millisecond, "agent %s never became %s", id, want)
}

func eventTypes(t *testing.T, env *apitest.Env, id string) []string {
	t.Helper()
	return env.DB.AgentEventTypes(t, id)
}

func enqueueUpsert(t *testing.T, env *apitest.Env, clusterID, credentialID string, version int64) models.AgentCommand {
	t.Helper()
	cmd := models.AgentCommand{ClusterID: uuid.MustParse(clusterID), Kind: models.CommandCredentialUpsert, Priority: models.PriorityNormal,
		DedupeKey: "test/" + credentialID + "/" + strconv.FormatInt(version, 10), SupersedeKey: "credential/" + credentialID,
		Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: credentialID, Version: version, Type: "api_key",
			KeyPrefix: "imp_abcd1234", SecretHash: strings.Repeat("ab", 32), ClientAppID: uuid.NewString(),
			Grants: []models.CredentialGrant{{PublishID: uuid.NewString(), PlanID: "", Limits: models.PlanLimits{RequestsPerMinute: 60}}}})}
	created, err := env.Store.EnqueueCommand(context.Background(), &cmd)
	require.NoError(t, err)
	require.True(t, created)
	return cmd
}

func waitAcked(t *testing.T, env *apitest.Env, commandID uuid.UUID, agentID string) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := env.DB.DeliveryStatus(commandID, agentID)
		return err == nil && st == models.DeliveryAcked
	}, 20*time.Second, 50*time.Millisecond, "command %s never acknowledged by %s", commandID, agentID)
}

func TestRegisterConnectAndSingleUseToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.token(t, nil)
	ra := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), tok, "edge-1")
	id := ra.identity(t)
	require.Equal(t, f.clusterID, id.ClusterID)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)

	r := f.ops.Get("/v1/operator/clusters/" + f.clusterID)
	require.Equal(t, http.StatusOK, r.Status)
	cl := r.Map()
	require.Equal(t, "active", cl["status"], "the first agent activates the cluster")
	require.EqualValues(t, 1, cl["agent_count"])
	require.EqualValues(t, 1, cl["connected_agents"])

	r = f.ops.Get("/v1/operator/agents/" + id.AgentID)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "edge-1", r.Map()["name"])
	require.Equal(t, []string{"registered", "token_issued", "connected"}, eventTypes(t, f.env, id.AgentID))

	// The agent JWT works on /v1/agent and shows the agent its own identity.
	r = f.env.WithToken(id.AgentJWT).Get("/v1/agent/me")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, f.clusterID, r.Map()["cluster_id"])

	// The single-use token was used up: a second agent is refused and nothing is created.
	second := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), tok, "edge-2")
	select {
	case err := <-second.done:
		require.ErrorIs(t, err, agent.ErrRegistrationRefused)
	case <-time.After(20 * time.Second):
		t.Fatal("a reused registration token was not refused")
	}
	require.Equal(t, 1, f.env.DB.Count(t, "agents"))

	// The token list shows it as used, never its secret.
	r = f.ops.Get("/v1/operator/clusters/" + f.clusterID + "/registration-tokens")
	require.NotContains(t, string(r.Body), tok)
	require.Contains(t, string(r.Body), `"state":"used"`)
}

func TestDisconnectDetection(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ra := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	require.Equal(t, "active", f.ops.Get("/v1/operator/clusters/" + f.clusterID).Map()["status"], "a connected agent makes its cluster active")

	// The last heartbeat shown moves on (the replica's lease vouches for the agent).
	shown := func() time.Time {
		return timeField(t, f.ops.Get("/v1/operator/agents/"+id.AgentID).Map(), "last_heartbeat_at")
	}
	first := shown()
	require.Eventually(t, func() bool { return shown().After(first) }, 10*time.Second, 100*time.Millisecond)

	ra.stop() // the stream ends
	waitStatus(t, f.env, id.AgentID, models.AgentDisconnected, 10*time.Second)
	r := f.ops.Get("/v1/operator/clusters/" + f.clusterID)
	require.Equal(t, "inactive", r.Map()["status"])
	// The stream's opening and end are the agent's newest events, both naming its session.
	var detail struct {
		RecentEvents []struct {
			Type      string            `json:"type"`
			Message   string            `json:"message"`
			Metadata  map[string]string `json:"metadata"`
			IPAddress string            `json:"ip_address"`
		} `json:"recent_events"`
	}
	f.ops.Get("/v1/operator/agents/" + id.AgentID).JSON(&detail)
	require.GreaterOrEqual(t, len(detail.RecentEvents), 2)
	ended, opened := detail.RecentEvents[0], detail.RecentEvents[1]
	require.Equal(t, models.EventDisconnected, ended.Type)
	require.Equal(t, models.EventConnected, opened.Type)
	require.Equal(t, "stream opened", opened.Message)
	require.NotEmpty(t, opened.Metadata["session_id"])
	require.Equal(t, opened.Metadata["session_id"], ended.Metadata["session_id"])
	require.NotEmpty(t, opened.IPAddress)

	// A client that authenticates and then goes silent is dropped after 3 missed heartbeats.
	stream := rawConnect(t, f.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RefreshSecret{RefreshSecret: id.RefreshSecret}, AgentId: id.AgentID})
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.NotNil(t, resp.GetConnectResponse())
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 5*time.Second)
	start := time.Now()
	waitStatus(t, f.env, id.AgentID, models.AgentDisconnected, 10*time.Second)
	require.GreaterOrEqual(t, time.Since(start), 2*time.Second, "not before the heartbeats were missed")
	msg := f.env.DB.LastDisconnectMessage(t, id.AgentID)
	require.Contains(t, msg, "missed 3 heartbeats")
}

func TestRevokeWhileConnected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	ra := startAgent(t, f.env, f.env.Replica.Addr, dir, f.token(t, map[string]any{"max_uses": 5}), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)

	r := f.ops.Post("/v1/operator/agents/"+id.AgentID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status)
	select {
	case err := <-ra.done:
		require.ErrorIs(t, err, agent.ErrRevoked, "the agent was told Close{REVOKED}")
	case <-time.After(20 * time.Second):
		t.Fatal("the revoked agent kept running")
	}
	require.Equal(t, models.AgentRevoked, agentStatus(t, f.env, id.AgentID))
	require.Equal(t, http.StatusUnauthorized, f.env.WithToken(id.AgentJWT).Get("/v1/agent/me").Status)

	// Its old credentials never get it back in: JWT and refresh secret both refused.
	conn, err := grpc.NewClient(f.env.Replica.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	for _, req := range []*agentv1.ConnectRequest{
		{Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: id.AgentJWT}},
		{Credential: &agentv1.ConnectRequest_RefreshSecret{RefreshSecret: id.RefreshSecret}, AgentId: id.AgentID},
	} {
		stream, err := agentv1.NewAgentServiceClient(conn).Connect(context.Background())
		require.NoError(t, err)
		require.NoError(t, stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: req}}))
		msg, err := stream.Recv()
		require.NoError(t, err)
		require.Equal(t, agentv1.CloseReason_CLOSE_REASON_REVOKED, msg.GetClose().GetReason())
		_, err = stream.Recv()
		require.Equal(t, codes.Unauthenticated, status.Code(err))
	}
	require.Equal(t, models.AgentRevoked, agentStatus(t, f.env, id.AgentID))
}

// A revoke notified between a JWT connect's claim of the agent and the registration of its
// session finds no session to close; the connect sees the notification count move, checks the
// row again and refuses the stream as revoked.
func TestRevokeDuringJWTConnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	gw := f.env.Replica.Gateway
	id := f.env.DB.InsertNamedPendingAgents(t, uuid.MustParse(f.clusterID), "racing-", 1)[0]
	var once sync.Once
	agentgw.SetClaimedHook(gw, func(agentID uuid.UUID) {
		if agentID != id {
			return
		}
		once.Do(func() {
			before := agentgw.ControlSeq(gw)
			r := f.ops.Post("/v1/operator/agents/"+id.String()+"/revoke", nil)
			assert.Equal(t, http.StatusOK, r.Status, string(r.Body))
			assert.Eventually(t, func() bool { return agentgw.ControlSeq(gw) > before }, 5*time.Second, 5*time.Millisecond, "the revoke is notified")
		})
	})
	jwt, _ := gw.Signer().Mint(id, uuid.MustParse(f.clusterID), 1)
	stream := rawConnect(t, f.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: jwt}})
	msg, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, agentv1.CloseReason_CLOSE_REASON_REVOKED, msg.GetClose().GetReason(), "got %v", msg)
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Equal(t, models.AgentRevoked, agentStatus(t, f.env, id.String()))
	require.Zero(t, gw.SessionCount())
}

// A command notified between a JWT connect's claim, which read the agent's pending commands,
// and the registration of its session finds no stream to go to; the connect sees the
// notification count move, and its first sync reads the commands again.
func TestCommandDuringJWTConnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	gw := f.env.Replica.Gateway
	<-gw.ListenReady()
	id := f.env.DB.InsertNamedPendingAgents(t, uuid.MustParse(f.clusterID), "racing-", 1)[0]
	var (
		once sync.Once
		cmd  models.AgentCommand
	)
	agentgw.SetClaimedHook(gw, func(agentID uuid.UUID) {
		if agentID != id {
			return
		}
		once.Do(func() {
			before := agentgw.NotifiedLookedUp(gw)
			cmd = enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
			assert.Eventually(t, func() bool { return agentgw.NotifiedLookedUp(gw) > before }, 5*time.Second, 5*time.Millisecond,
				"the command is notified, and finds no stream of the agent yet")
		})
	})
	jwt, _ := gw.Signer().Mint(id, uuid.MustParse(f.clusterID), 1)
	stream := rawConnect(t, f.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: jwt}})
	msg, err := stream.Recv()
	require.NoError(t, err)
	require.NotNil(t, msg.GetConnectResponse(), "got %v", msg)
	got := make(chan *agentv1.ServerMessage, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				close(got)
				return
			}
			if msg.GetCredentialUpsert() != nil {
				got <- msg
				return
			}
		}
	}()
	select {
	case msg, ok := <-got:
		require.True(t, ok, "the stream ended without the command")
		require.Equal(t, cmd.ID.String(), msg.GetCredentialUpsert().GetCommandId())
	case <-time.After(10 * time.Second):
		t.Fatal("the command notified during the connect never reached the agent")
	}
}

// TestNotifiedCommandReadAgainAfterAFailure: when the read of a notified command fails (the
// database briefly unavailable), the gateway reads it again, and the agent connected here gets
// it without reconnecting (the command is no credential the cluster has, so no drift repair
// sends it either).
func TestNotifiedCommandReadAgainAfterAFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	gw := f.env.Replica.Gateway
	ra := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)

	var failed atomic.Int32
	agentgw.SetNotifiedReadHook(gw, func() error {
		if failed.Add(1) <= 3 {
			return errors.New("the database is unavailable (injected)")
		}
		return nil
	})
	cmd := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, f.env, cmd.ID, id.AgentID)
	assert.Greater(t, failed.Load(), int32(3), "the read failed three times before it worked")
	assert.Equal(t, models.AgentConnected, agentStatus(t, f.env, id.AgentID))
	events := eventTypes(t, f.env, id.AgentID)
	assert.Equal(t, 1, countOf(events, models.EventConnected), "the agent got the command on the stream it had, not by reconnecting: %v", events)
}

// A stream that sends nothing is ended once its ConnectRequest is late, as cancelled, not
// refused (an agent told Unauthenticated would take its credentials for revoked), and the
// gateway holds nothing of it.
func TestSilentStreamEnded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	gw := f.env.Replica.Gateway
	agentgw.SetAuthTimeout(gw, 300*time.Millisecond)
	conn, err := grpc.NewClient(f.env.Replica.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	stream, err := agentv1.NewAgentServiceClient(conn).Connect(context.Background())
	require.NoError(t, err)
	start := time.Now()
	_, err = stream.Recv()
	require.Equal(t, codes.Canceled, status.Code(err), "got %v", err)
	require.Less(t, time.Since(start), 5*time.Second, "ended at its deadline, not the gateway's default")
	require.Zero(t, gw.SessionCount())
}

func TestTokenRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ra := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), f.token(t, nil), "")
	before := ra.identity(t)
	waitStatus(t, f.env, before.AgentID, models.AgentConnected, 10*time.Second)

	r := f.ops.Post("/v1/operator/agents/"+before.AgentID+"/rotate-token", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, true, r.Map()["agent_notified"])

	var after agent.Identity
	require.Eventually(t, func() bool {
		id, _ := agent.LoadIdentity(ra.dir)
		if id == nil || id.AgentJWT == before.AgentJWT || id.RefreshSecret == before.RefreshSecret {
			return false
		}
		after = *id
		return true
	}, 10*time.Second, 50*time.Millisecond, "the agent never stored a replaced token")
	require.Equal(t, http.StatusUnauthorized, f.env.WithToken(before.AgentJWT).Get("/v1/agent/me").Status, "the old JWT is retired")
	require.Equal(t, http.StatusOK, f.env.WithToken(after.AgentJWT).Get("/v1/agent/me").Status)
	require.Eventually(t, func() bool {
		for _, e := range eventTypes(t, f.env, before.AgentID) {
			if e == models.EventTokenReplaced {
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond)
}

func TestCommandForOfflineAgentDeliveredOnConnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	ra := startAgent(t, f.env, f.env.Replica.Addr, dir, f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	ra.stop()
	waitStatus(t, f.env, id.AgentID, models.AgentDisconnected, 10*time.Second)

	credID := uuid.NewString()
	cmd := enqueueUpsert(t, f.env, f.clusterID, credID, 1)
	revoke := models.AgentCommand{ClusterID: uuid.MustParse(f.clusterID), Kind: models.CommandCredentialRevoke, Priority: models.PriorityRevocation,
		DedupeKey: "test/revoke-other", Payload: models.ToJSONMap(models.CredentialRevokePayload{CredentialID: uuid.NewString(), Version: 2, Reason: "test"})}
	_, err := f.env.Store.EnqueueCommand(context.Background(), &revoke)
	require.NoError(t, err)
	pending, err := f.env.Store.PendingCommands(context.Background(), uuid.MustParse(f.clusterID), uuid.MustParse(id.AgentID))
	require.NoError(t, err)
	require.Len(t, pending, 2)
	require.Equal(t, models.CommandCredentialRevoke, pending[0].Kind, "revocations first, even though enqueued later")

	startAgent(t, f.env, f.env.Replica.Addr, dir, "", "")
	waitAcked(t, f.env, cmd.ID, id.AgentID)
	waitAcked(t, f.env, revoke.ID, id.AgentID)
	b, err := os.ReadFile(dir + "/credentials.json")
	require.NoError(t, err)
	require.Contains(t, string(b), credID)
	pending, err = f.env.Store.PendingCommands(context.Background(), uuid.MustParse(f.clusterID), uuid.MustParse(id.AgentID))
	require.NoError(t, err)
	require.Empty(t, pending)
}

// An agent connected to replica B gets a command created through replica A.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := f.env.StartReplica(t, "127.0.0.1:0")
	ra := startAgent(t, f.env, b.Addr, t.TempDir(), f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	require.True(t, b.Gateway.ConnectedHere(uuid.MustParse(id.AgentID)))
	require.False(t, f.env.Replica.Gateway.ConnectedHere(uuid.MustParse(id.AgentID)))

	// The command is written through the env's store (replica A's); only B's LISTEN can deliver it.
	cmd := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, f.env, cmd.ID, id.AgentID)
}

// An api restart: agents reconnect on their own; what was sent while it was down arrives once.
func TestAPIRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := f.env.StartReplica(t, "127.0.0.1:0")
	addr := b.Addr
	dir := t.TempDir()
	ra := startAgent(t, f.env, addr, dir, f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	first := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, f.env, first.ID, id.AgentID)

	b.Stop()
	waitStatus(t, f.env, id.AgentID, models.AgentDisconnected, 10*time.Second)
	second := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)

	f.env.StartReplica(t, addr)
	waitAcked(t, f.env, second.ID, id.AgentID)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	require.Equal(t, 1, f.env.DB.CountDeliveries(t, first.ID, ""), "the acknowledged command was not sent again")
	require.Equal(t, 1, countOf(eventTypes(t, f.env, id.AgentID), models.EventRegistered), "it reconnected as itself, not as a new agent")
	select {
	case err := <-ra.done:
		t.Fatalf("the agent stopped: %v", err)
	default:
	}
}

// Bad input is refused with one Unauthenticated (or a size error) and creates nothing.
func TestRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	expired := f.token(t, map[string]any{"ttl_seconds": 60})
	f.env.DB.ExpireRegistrationTokens(t)
	revoked := f.token(t, nil)
	r := f.ops.Get("/v1/operator/clusters/" + f.clusterID + "/registration-tokens")
	var list struct {
		Items []struct {
			ID     string `json:"id"`
			Prefix string `json:"prefix"`
		} `json:"items"`
	}
	r.JSON(&list)
	for _, it := range list.Items {
		if strings.HasPrefix(revoked, it.Prefix) {
			require.Equal(t, http.StatusOK, f.ops.Post("/v1/operator/clusters/"+f.clusterID+"/registration-tokens/"+it.ID+"/revoke", nil).Status)
		}
	}

	conn, err := grpc.NewClient(f.env.Replica.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := agentv1.NewAgentServiceClient(conn)
	attempt := func(first *agentv1.AgentMessage) error {
		stream, err := client.Connect(context.Background())
		require.NoError(t, err)
		require.NoError(t, stream.Send(first))
		for {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
	}
	connect := func(req *agentv1.ConnectRequest) *agentv1.AgentMessage {
		return &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: req}}
	}
	signer := f.env.Replica.Gateway.Signer()
	forged, _ := signer.Mint(uuid.New(), uuid.MustParse(f.clusterID), 1)
	cases := map[string]*agentv1.AgentMessage{
		"heartbeat before auth": {Payload: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}},
		"expired token":         connect(&agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: expired}}),
		"revoked token":         connect(&agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: revoked}}),
		"unknown token":         connect(&agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: "imprt_nope"}}),
		"garbage jwt":           connect(&agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: "x.y.z"}}),
		"jwt of no agent":       connect(&agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_AgentJwt{AgentJwt: forged}}),
		"no credential":         connect(&agentv1.ConnectRequest{}),
	}
	for name, msg := range cases {
		err := attempt(msg)
		require.Equal(t, codes.Unauthenticated, status.Code(err), name)
		require.Equal(t, "unauthenticated", status.Convert(err).Message(), "%s: the reason is not told", name)
	}
	big := connect(&agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: strings.Repeat("x", 5<<20)}})
	require.Equal(t, codes.ResourceExhausted, status.Code(attempt(big)), "oversize message")

	require.Zero(t, f.env.DB.Count(t, "agents"), "nothing created")
}

func countOf(xs []string, x string) int {
	n := 0
	for _, s := range xs {
		if s == x {
			n++
		}
	}
	return n
}

// A delivery is written once when the agent answers within the hold (acked, with both
// times), and as 'sent' when it does not answer.
func TestDeliveryRowsSentAndAcked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	ra := startAgent(t, f.env, f.env.Replica.Addr, dir, f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)
	acked := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, f.env, acked.ID, id.AgentID)
	sentAt, ackedAt := f.env.DB.DeliveryTimes(t, acked.ID)
	require.NotNil(t, sentAt, "the folded sent record keeps its time")
	require.NotNil(t, ackedAt)
	require.False(t, sentAt.After(*ackedAt))
	ra.stop()
	waitStatus(t, f.env, id.AgentID, models.AgentDisconnected, 10*time.Second)

	// A client that takes the command and never answers.
	silent := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	stream := rawConnect(t, f.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RefreshSecret{RefreshSecret: id.RefreshSecret}, AgentId: id.AgentID})
	for {
		msg, err := stream.Recv()
		require.NoError(t, err)
		if msg.GetCredentialUpsert().GetCommandId() == silent.ID.String() {
			break
		}
	}
	require.Eventually(t, func() bool {
		st, err := f.env.DB.DeliveryStatus(silent.ID, "")
		return err == nil && st == models.DeliverySent
	}, 15*time.Second, 100*time.Millisecond, "an unanswered delivery is recorded as sent")
}

// TestAnswersToForeignCommandsRefused: an agent of cluster A cannot acknowledge (or report a
// result for) a command of cluster B: nothing is stored, each attempt is a protocol_violation
// event, and a stream that keeps trying is closed. Its own commands are acknowledged as usual.
func TestAnswersToForeignCommandsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.ops.Post("/v1/operator/clusters", map[string]any{"name": "us-prod-1", "region": "us-east",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	clusterB := r.Map()["id"].(string)
	foreign := enqueueUpsert(t, f.env, clusterB, uuid.NewString(), 1)

	stream := rawConnect(t, f.env.Replica.Addr, &agentv1.ConnectRequest{Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: f.token(t, nil)}, AgentName: "a-1"})
	first, err := stream.Recv()
	require.NoError(t, err)
	agentID := first.GetConnectResponse().GetAgentId()
	require.NotEmpty(t, agentID)

	// Its own command arrives and its ack is stored.
	own := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	for {
		m, err := stream.Recv()
		require.NoError(t, err)
		if m.GetCredentialUpsert().GetCommandId() == own.ID.String() {
			break
		}
	}
	require.NoError(t, stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandAck{CommandAck: &agentv1.CommandAck{CommandId: own.ID.String(), Success: true}}}))
	waitAcked(t, f.env, own.ID, agentID)

	// Answers to cluster B's command: refused, until the stream is closed.
	for i := 0; i < agentgw.MaxForeignAnswers; i++ {
		var msg *agentv1.AgentMessage
		if i%2 == 0 {
			msg = &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandAck{CommandAck: &agentv1.CommandAck{CommandId: foreign.ID.String(), Success: true}}}
		} else {
			msg = &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_DeployResult{DeployResult: &agentv1.DeployResult{CommandId: foreign.ID.String(),
				Status: agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED}}}
		}
		require.NoError(t, stream.Send(msg))
	}
	var closed *agentv1.Close
	for closed == nil {
		m, err := stream.Recv()
		require.NoError(t, err, "the stream ends with Close{PROTOCOL_ERROR}")
		closed = m.GetClose()
	}
	require.Equal(t, agentv1.CloseReason_CLOSE_REASON_PROTOCOL_ERROR, closed.GetReason())

	require.Zero(t, f.env.DB.CountDeliveries(t, foreign.ID, ""), "nothing stored for cluster B's command")
	require.Eventually(t, func() bool {
		return countOf(eventTypes(t, f.env, agentID), models.EventProtocolViolation) == agentgw.MaxForeignAnswers
	},
		10*time.Second, 50*time.Millisecond, "every attempt is a security event")
}

// TestGRPCHealthService: the standard health service answers for the server and for
// agent.v1.AgentService.
func TestGRPCHealthService(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn, err := grpc.NewClient(f.env.Replica.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "agent.v1.AgentService"} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		require.NoError(t, err, svc)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), svc)
	}
}

// countingSink takes every result and counts them by command.
type countingSink struct {
	mu   sync.Mutex
	n    map[uuid.UUID]int
	last map[uuid.UUID]store.UnpassedResult
}

func (s *countingSink) PassOn(_ context.Context, r store.UnpassedResult) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n[r.CommandID]++
	s.last[r.CommandID] = r
	return nil
}

func (s *countingSink) count(id uuid.UUID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[id]
}

// An acknowledged result is passed on once, and marked so (the marks of results are written
// in batches, well before the sweeper would pass an unmarked one on again after 2 s).
func TestResultPassedOnOnceAndMarked(t *testing.T) {
	t.Parallel()
	sink := &countingSink{n: map[uuid.UUID]int{}, last: map[uuid.UUID]store.UnpassedResult{}}
	f := sinkFixture(t, "kr-prod-2", sink)
	env := f.env
	ra := startAgent(t, env, env.Replica.Addr, t.TempDir(), f.token(t, nil), "")
	id := ra.identity(t)
	waitStatus(t, env, id.AgentID, models.AgentConnected, 10*time.Second)
	cmd := enqueueUpsert(t, env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, env, cmd.ID, id.AgentID)
	require.Eventually(t, func() bool { return env.DB.DeliveryPassedOn(t, cmd.ID) }, 1500*time.Millisecond, 20*time.Millisecond,
		"the acknowledged result is marked passed on")
	require.Equal(t, 1, sink.count(cmd.ID))
	// What the gateway passes on is the command as it was queued, without reading it back.
	sink.mu.Lock()
	got := sink.last[cmd.ID]
	sink.mu.Unlock()
	require.Equal(t, models.CommandCredentialUpsert, got.Kind)
	require.Equal(t, f.clusterID, got.ClusterID.String())
	require.Equal(t, id.AgentID, got.AgentID.String())
	require.Equal(t, cmd.Payload["credential_id"], got.Payload["credential_id"])
	require.Equal(t, "succeeded", got.ResultStatus)
	require.Equal(t, true, got.Result["success"])
	time.Sleep(3 * time.Second) // past the sweeper's age: a marked result is not passed on again
	require.Equal(t, 1, sink.count(cmd.ID), "the sweeper passed a marked result on again")
}

// settlingSink is a countingSink that, like TemporalSink with credential acknowledgements,
// needs only the first result of a command: the later ones are settled.
type settlingSink struct{ countingSink }

func (s *settlingSink) Settled(r store.UnpassedResult) bool { return s.count(r.CommandID) > 0 }

// A result the sink says it needs no more is not passed on, and its row is stored passed on in
// the statement that stores the acknowledgement (no mark follows it).
func TestSettledResultStoredPassedOn(t *testing.T) {
	t.Parallel()
	sink := &settlingSink{countingSink{n: map[uuid.UUID]int{}, last: map[uuid.UUID]store.UnpassedResult{}}}
	f := sinkFixture(t, "kr-prod-3", sink)
	env := f.env
	first := startAgent(t, env, env.Replica.Addr, t.TempDir(), f.token(t, map[string]any{"max_uses": 2}), "a1").identity(t)
	waitStatus(t, env, first.AgentID, models.AgentConnected, 10*time.Second)
	cmd := enqueueUpsert(t, env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, env, cmd.ID, first.AgentID)
	require.Eventually(t, func() bool { return env.DB.DeliveryPassedOn(t, cmd.ID) }, 1500*time.Millisecond, 20*time.Millisecond,
		"the first result is passed on and marked")
	require.Equal(t, 1, sink.count(cmd.ID))

	// The second agent gets the pending command when it connects, and answers it.
	second := startAgent(t, env, env.Replica.Addr, t.TempDir(), f.token(t, nil), "a2").identity(t)
	waitAcked(t, env, cmd.ID, second.AgentID)
	var passed bool
	require.NoError(t, env.SQL.QueryRow(`SELECT passed_on_at IS NOT NULL FROM agent_command_deliveries WHERE command_id = $1 AND agent_id = $2 AND status = 'acked'`,
		cmd.ID, second.AgentID).Scan(&passed))
	require.True(t, passed, "a settled result is stored passed on with its acknowledgement")
	time.Sleep(3 * time.Second) // past the sweeper's age
	require.Equal(t, 1, sink.count(cmd.ID), "a settled result was passed on")
}

// An agent's REST calls check its JWT against its row as served from memory (the TTL here is
// an hour, so only a notification can explain a refusal): a change made behind the API's back
// is not seen, while a revoke or a rotation through the API refuses the retired JWT on the next
// calls, on every replica (each drops the agent on the notification).
func TestAgentTokenStateCachedUntilNotified(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	agentgw.SetTokenStateTTL(f.env.Replica.Gateway, time.Hour)
	first := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), f.token(t, map[string]any{"max_uses": 2}), "a1")
	a1 := first.identity(t)
	second := startAgent(t, f.env, f.env.Replica.Addr, t.TempDir(), f.token(t, nil), "a2")
	a2 := second.identity(t)
	waitStatus(t, f.env, a1.AgentID, models.AgentConnected, 10*time.Second)
	waitStatus(t, f.env, a2.AgentID, models.AgentConnected, 10*time.Second)
	me := func(jwt string) int { return f.env.WithToken(jwt).Get("/v1/agent/me").Status }

	require.Equal(t, http.StatusOK, me(a1.AgentJWT))
	require.Equal(t, http.StatusOK, me(a2.AgentJWT))
	_, err := f.env.SQL.Exec(`UPDATE agents SET token_generation = token_generation + 1 WHERE id = $1`, a1.AgentID)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, me(a1.AgentJWT), "served from memory: the row changed without a notification")

	r := f.ops.Post("/v1/operator/agents/"+a2.AgentID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Eventually(t, func() bool { return me(a2.AgentJWT) == http.StatusUnauthorized }, 5*time.Second, 20*time.Millisecond,
		"the revoked agent's JWT is refused once the notification arrived")

	r = f.ops.Post("/v1/operator/agents/"+a1.AgentID+"/rotate-token", nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Eventually(t, func() bool { return me(a1.AgentJWT) == http.StatusUnauthorized }, 5*time.Second, 20*time.Millisecond,
		"the rotated agent's old JWT is refused once the notification arrived")
}

// rawConnect opens a stream to addr, as no real agent would, and sends req as its first
// message; the connection is closed when the test ends.
func rawConnect(t *testing.T, addr string, req *agentv1.ConnectRequest) agentv1.AgentService_ConnectClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	stream, err := agentv1.NewAgentServiceClient(conn).Connect(context.Background())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: req}}))
	return stream
}

// sinkFixture starts a stack whose gateway passes results on to sink, with one cluster named
// name.
func sinkFixture(t *testing.T, name string, sink agentgw.ResultSink) *fixture {
	t.Helper()
	env := apitest.New(t, apitest.Options{Agents: timing, GatewayOptions: []agentgw.Option{agentgw.WithResultSink(sink)}})
	ops := env.As(opsP)
	r := ops.Post("/v1/operator/clusters", map[string]any{"name": name, "region": "kr-central",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	return &fixture{env: env, ops: ops, clusterID: r.Map()["id"].(string)}
}
