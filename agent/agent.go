package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/retry"
)

// Errors that end Run for good; anything else makes the agent reconnect.
var (
	// ErrRevoked means the server revoked the agent (Close{REVOKED}). The identity has been
	// deleted; the agent needs a new registration token to come back.
	ErrRevoked = errors.New("agent revoked by the server")
	// ErrRegistrationRefused means the server refused the registration token (unknown,
	// expired, already used or revoked). Retrying cannot help.
	ErrRegistrationRefused = errors.New("registration token refused")
	// ErrNotRegistered means the state directory holds no usable identity and no registration
	// token was given.
	ErrNotRegistered = errors.New("agent is not registered and no registration token was given")
)

// Reasons a session ended that change how long the agent waits before reconnecting.
var (
	// errCredentialRefused: the JWT was refused; the refresh secret is tried at once.
	errCredentialRefused = errors.New("credential refused")
	// errIdentityRefused: JWT and refresh secret were both refused; retry slowly, in case the
	// server is wrong, and say so in the log.
	errIdentityRefused = errors.New("agent identity refused (JWT and refresh secret)")
	// errSuperseded: another stream of this agent took over (two processes sharing one state
	// directory, usually); reconnecting quickly would only fight over the stream.
	errSuperseded = errors.New("stream superseded by another connection of this agent")
	// errHeartbeatTimeout: the server stopped answering heartbeats; the stream is presumed dead.
	errHeartbeatTimeout = errors.New("no message from the server for three heartbeat intervals")
)

// credentialKind is the credential a ConnectRequest carried.
type credentialKind int

const (
	credRegistration credentialKind = iota + 1
	credJWT
	credRefresh
)

func (k credentialKind) String() string {
	switch k {
	case credRegistration:
		return "registration_token"
	case credJWT:
		return "agent_jwt"
	case credRefresh:
		return "refresh_secret"
	}
	return "none"
}

// Agent is one running agent. Create it with New and start it with Run.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	st    *state
	creds *CredentialStore
	usage *usageLog
	// askApplied: the server asked for the full applied set with the next heartbeat.
	askApplied atomic.Bool
	// verifier is the agent's credential check, with counts kept in the state directory.
	verifier *Verifier
	// nginx is the nginx data plane (nil for DataPlaneFiles).
	nginx *nginxPlane
	// drift is what checkRendered found wrong with the rendered files (DataPlaneFiles).
	drift renderedDrift
	// metrics are served on MetricsListen; metricsAddr is where, once listening.
	metrics     *agentMetrics
	metricsAddr atomic.Value

	idMu     sync.Mutex
	identity *Identity

	// Which credentials the server refused since the last successful connect. Only the Run
	// goroutine touches them.
	jwtRefused, refreshRefused bool
}

// New prepares an agent: validates cfg, creates the state directory and loads what it holds.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validateAndDefault(); err != nil {
		return nil, err
	}
	if err := ensurePrivateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	id, err := LoadIdentity(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	creds, err := OpenCredentialStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, st: st, creds: creds, usage: newUsageLog(), identity: id, metrics: newAgentMetrics()}
	a.verifier = NewVerifier(creds, withUsage(a.usage), WithCounterFile(filepath.Join(cfg.StateDir, countersFile)), withDecisions(a.metrics.decided))
	if cfg.DataPlane == DataPlaneNginx {
		a.nginx = newNginxPlane(a)
	} else if err := a.checkRendered(); err != nil {
		return nil, err
	}
	return a, nil
}

// countersFile keeps the verifier's request counts across restarts.
const countersFile = "counters.json"

// Run creates an agent from cfg and runs it; see Agent.Run.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// Verifier returns the agent's Verifier over its live credential set, for a gateway check
// served from the agent process; its counts survive restarts. The requests it allows are
// reported to the server with the next heartbeat (the credential's last-used time). With
// options, it returns a new Verifier with counts of its own (tests set a clock).
func (a *Agent) Verifier(opts ...VerifierOption) *Verifier {
	if len(opts) == 0 {
		return a.verifier
	}
	return NewVerifier(a.creds, append([]VerifierOption{withUsage(a.usage)}, opts...)...)
}

// Identity returns a copy of the agent's current identity, if it has one.
func (a *Agent) Identity() (Identity, bool) {
	a.idMu.Lock()
	defer a.idMu.Unlock()
	if a.identity == nil {
		return Identity{}, false
	}
	return *a.identity, true
}

func (a *Agent) currentIdentity() *Identity {
	a.idMu.Lock()
	defer a.idMu.Unlock()
	if a.identity == nil {
		return nil
	}
	c := *a.identity
	return &c
}

// saveIdentity persists id and only then makes it current, so the agent never uses a
// credential it could lose in a crash.
func (a *Agent) saveIdentity(id *Identity) error {
	if err := SaveIdentity(a.cfg.StateDir, id); err != nil {
		return err
	}
	a.idMu.Lock()
	a.identity = id
	a.idMu.Unlock()
	return nil
}

// Run keeps the agent connected until ctx is cancelled (it returns ctx.Err()), the agent is
// revoked (ErrRevoked) or it cannot possibly get in (ErrRegistrationRefused, ErrNotRegistered).
// Every other end of the stream is followed by a reconnect with backoff. All goroutines Run
// starts have stopped when it returns.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		if err := a.verifier.Flush(); err != nil {
			a.log.Error("save request counts", "err", err)
		}
		if a.nginx != nil && a.nginx.srv != nil && a.cfg.Nginx.StopOnExit {
			if err := a.nginx.srv.Stop(10 * time.Second); err != nil {
				a.log.Error("stop nginx", "err", err)
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.flushCounters(ctx)
	}()
	if a.cfg.VerifyListen != "" {
		stop, err := a.serveVerifier(ctx, &wg)
		if err != nil {
			return err
		}
		defer stop()
	}
	if a.cfg.MetricsListen != "" {
		stop, err := a.serveMetrics(ctx, &wg)
		if err != nil {
			return err
		}
		defer stop()
	}
	if a.nginx != nil {
		// Fail static: serve what the state directory holds before the control plane answers.
		a.nginx.start(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.nginx.run(ctx)
		}()
		if a.nginx.srv != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.nginx.srv.Watch(ctx, time.Second)
			}()
		}
	}
	return a.connectLoop(ctx)
}

// flushCounters writes the verifier's counts every CounterFlushInterval.
func (a *Agent) flushCounters(ctx context.Context) {
	t := time.NewTicker(a.cfg.CounterFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.verifier.Flush(); err != nil {
				a.log.Warn("save request counts", "err", err)
			}
		}
	}
}

// serveVerifier serves the credential verifier on VerifyListen until ctx ends.
func (a *Agent) serveVerifier(ctx context.Context, wg *sync.WaitGroup) (stop func(), err error) {
	l, err := net.Listen("tcp", a.cfg.VerifyListen)
	if err != nil {
		return nil, fmt.Errorf("agent: credential verifier: %w", err)
	}
	srv := &http.Server{Handler: a.verifier.Handler("/verify"), ReadHeaderTimeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("credential verifier", "err", err)
		}
	}()
	a.log.Info("credential verifier listening", "addr", l.Addr().String())
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// connectLoop keeps a session with the control plane until ctx ends or the agent cannot get in.
func (a *Agent) connectLoop(ctx context.Context) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(a.cfg.TransportCredentials),
		// Snapshots travel over REST, so stream messages stay small; the cap protects the agent
		// from a confused or hostile server.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4 << 20)),
		// The channel's own reconnects keep to the agent's backoff (reconnect.go).
		ReconnectDialOption(a.cfg.MinBackoff, a.cfg.MaxBackoff),
	}, a.cfg.DialOptions...)
	conn, err := grpc.NewClient(a.cfg.ServerAddr, opts...)
	if err != nil {
		return fmt.Errorf("agent: dial %s: %w", a.cfg.ServerAddr, err)
	}
	defer conn.Close()
	client := agentv1.NewAgentServiceClient(conn)

	bo := retry.Backoff{Min: a.cfg.MinBackoff, Max: a.cfg.MaxBackoff}
	for {
		connected, err := a.session(ctx, client)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, ErrRevoked), errors.Is(err, ErrRegistrationRefused), errors.Is(err, ErrNotRegistered):
			a.log.Error("agent stopping", "err", err)
			return err
		}
		if connected {
			bo.Reset()
		}
		delay := bo.Next()
		switch {
		case errors.Is(err, errCredentialRefused):
			delay = 0 // the next credential is ready; a refusal is not a server problem
		case errors.Is(err, errSuperseded), errors.Is(err, errIdentityRefused):
			delay = a.cfg.MaxBackoff
		}
		a.log.Warn("agent stream ended; reconnecting", "err", err, "retry_in", delay.Round(time.Millisecond))
		if delay > 0 && !retry.Sleep(ctx, delay) {
			return ctx.Err()
		}
	}
}

// connectRequest picks the credential for the next connection: the JWT while it is valid and
// not refused, then the refresh secret, and the registration token only when there is no
// identity at all (registering again would create a second agent).
func (a *Agent) connectRequest() (*agentv1.ConnectRequest, credentialKind, error) {
	req := &agentv1.ConnectRequest{
		AgentName:    a.cfg.Name,
		AgentVersion: a.cfg.Version,
		Hostname:     a.cfg.Hostname,
		Applied:      a.appliedState(),
		// What the server needs to send first when the state directory is gone.
		CredentialChecksum: a.creds.Checksum(),
	}
	id := a.currentIdentity()
	if id == nil {
		if a.cfg.RegistrationToken == "" {
			return nil, 0, ErrNotRegistered
		}
		req.Credential = &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: a.cfg.RegistrationToken}
		return req, credRegistration, nil
	}
	req.AgentId = id.AgentID
	if id.jwtUsable(time.Now()) && !a.jwtRefused {
		req.Credential = &agentv1.ConnectRequest_AgentJwt{AgentJwt: id.AgentJWT}
		return req, credJWT, nil
	}
	if id.canRefresh() && !a.refreshRefused {
		req.Credential = &agentv1.ConnectRequest_RefreshSecret{RefreshSecret: id.RefreshSecret}
		return req, credRefresh, nil
	}
	if !id.canRefresh() {
		return nil, 0, fmt.Errorf("%w: the stored JWT is expired or refused and there is no refresh secret", ErrNotRegistered)
	}
	// Both were refused: start over with the JWT (or refresh secret) after a long pause.
	a.jwtRefused, a.refreshRefused = false, false
	return nil, 0, errIdentityRefused
}

// refused records that the server refused the credential of kind and returns the error that
// tells Run what to do next.
func (a *Agent) refused(kind credentialKind, detail string) error {
	switch kind {
	case credRegistration:
		return fmt.Errorf("%w: %s", ErrRegistrationRefused, detail)
	case credJWT:
		a.jwtRefused = true
		if id := a.currentIdentity(); id.canRefresh() {
			return fmt.Errorf("%w: agent_jwt: %s", errCredentialRefused, detail)
		}
		return fmt.Errorf("%w: %s", errIdentityRefused, detail)
	default:
		// Nothing left to try: start over with the JWT after a long pause, in case the
		// refusal was the server's mistake (the log says what to do if it was not).
		a.jwtRefused, a.refreshRefused = false, false
		return fmt.Errorf("%w: %s", errIdentityRefused, detail)
	}
}

// session runs one stream from ConnectRequest to its end. connected reports whether the server
// accepted the agent (which resets the backoff).
func (a *Agent) session(ctx context.Context, client agentv1.AgentServiceClient) (connected bool, err error) {
	req, kind, err := a.connectRequest()
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	stream, err := client.Connect(sctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	if err := stream.Send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: req}}); err != nil {
		// The real reason (e.g. UNAUTHENTICATED) surfaces on Recv below.
		a.log.Debug("send connect request failed", "err", err)
	}
	first, err := stream.Recv()
	if err != nil {
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
			return false, a.refused(kind, status.Convert(err).Message())
		}
		return false, fmt.Errorf("connect: %w", err)
	}
	var resp *agentv1.ConnectResponse
	switch p := first.Payload.(type) {
	case *agentv1.ServerMessage_ConnectResponse:
		resp = p.ConnectResponse
	case *agentv1.ServerMessage_Close:
		return false, a.onClose(kind, p.Close)
	default:
		return false, fmt.Errorf("connect: server sent %T before ConnectResponse", first.Payload)
	}
	if err := a.adopt(kind, resp); err != nil {
		return false, err
	}
	a.jwtRefused, a.refreshRefused = false, false

	log := a.log.With("agent_id", resp.GetAgentId(), "cluster_id", resp.GetClusterId())
	interval := time.Duration(resp.GetHeartbeatIntervalSeconds()) * time.Second
	if interval <= 0 {
		interval = a.cfg.DefaultHeartbeatInterval
	}
	log.Info("agent connected", "credential", kind.String(), "cluster_name", resp.GetClusterName(), "heartbeat_interval", interval)

	// gRPC allows one sender and one receiver at a time; replies (this goroutine) and
	// heartbeats (the ticker goroutine) share the sending side.
	var sendMu sync.Mutex
	send := func(m *agentv1.AgentMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}

	var lastRecv atomic.Int64
	lastRecv.Store(time.Now().UnixNano())
	deploys := newDeployRunner()
	// Deploys in flight see the session's context end and return without an answer (the
	// server redelivers them); the session is over once they have.
	defer deploys.wait()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.heartbeats(sctx, cancel, send, interval, &lastRecv)
	}()
	defer func() {
		cancel(nil)
		wg.Wait()
	}()

	for {
		msg, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
				return true, cause
			}
			return true, fmt.Errorf("stream: %w", err)
		}
		lastRecv.Store(time.Now().UnixNano())
		if err := a.handle(sctx, log, kind, send, deploys, msg); err != nil {
			return true, err
		}
	}
}

// adopt persists what a ConnectResponse says about the agent's identity.
func (a *Agent) adopt(kind credentialKind, resp *agentv1.ConnectResponse) error {
	if resp.GetAgentId() == "" {
		return errors.New("connect: ConnectResponse without agent_id")
	}
	cur := a.currentIdentity()
	next := &Identity{}
	if cur != nil {
		*next = *cur
	}
	next.AgentID = resp.GetAgentId()
	next.ClusterID = resp.GetClusterId()
	next.ClusterName = resp.GetClusterName()
	if resp.GetAgentJwt() != "" {
		next.AgentJWT = resp.GetAgentJwt()
		next.JWTExpiresAt = time.Time{}
		if resp.GetJwtExpiresAt() != nil {
			next.JWTExpiresAt = resp.GetJwtExpiresAt().AsTime()
		}
	}
	if resp.GetRefreshSecret() != "" {
		next.RefreshSecret = resp.GetRefreshSecret()
	}
	if kind != credJWT && next.AgentJWT == "" {
		return fmt.Errorf("connect: ConnectResponse to a %s connect carries no agent_jwt", kind)
	}
	if cur != nil && *cur == *next {
		return nil
	}
	if err := a.saveIdentity(next); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}

// heartbeats sends a Heartbeat every interval and ends the session when the server has been
// silent for three intervals (it answers every heartbeat, so silence means a dead stream that
// TCP has not noticed yet).
func (a *Agent) heartbeats(ctx context.Context, cancel context.CancelCauseFunc, send func(*agentv1.AgentMessage) error, interval time.Duration, lastRecv *atomic.Int64) {
	t := time.NewTicker(interval)
	defer t.Stop()
	// The applied set goes in full on the stream's first heartbeat, when it changed, and when
	// the server asked; otherwise only its digest (a few dozen bytes for any number of
	// publishes).
	sentDigest := ""
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(time.Unix(0, lastRecv.Load())) > 3*interval {
				cancel(errHeartbeatTimeout)
				return
			}
			applied := a.appliedState()
			digest := appliedDigest(applied)
			hb := &agentv1.Heartbeat{
				SentAt:             timestamppb.New(now),
				CredentialCount:    int64(a.creds.ActiveCount(now)),
				CredentialUsage:    a.usage.take(maxUsagePerHeartbeat),
				AppliedDigest:      digest,
				CredentialChecksum: a.creds.Checksum(),
			}
			if digest != sentDigest || a.askApplied.Swap(false) {
				hb.Applied, hb.AppliedFull = applied, true
				sentDigest = digest
			}
			if err := send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Heartbeat{Heartbeat: hb}}); err != nil {
				// Not sent: report the usage on the next stream's heartbeats instead.
				a.usage.restore(hb.CredentialUsage)
				cancel(fmt.Errorf("send heartbeat: %w", err))
				return
			}
		}
	}
}

// handle dispatches one server message. A returned error ends the session.
func (a *Agent) handle(ctx context.Context, log *slog.Logger, kind credentialKind, send func(*agentv1.AgentMessage) error, deploys *deployRunner, msg *agentv1.ServerMessage) error {
	switch p := msg.Payload.(type) {
	case *agentv1.ServerMessage_HeartbeatAck:
		if p.HeartbeatAck.GetSendApplied() {
			a.askApplied.Store(true)
		}
		return nil
	case *agentv1.ServerMessage_DeployCommand:
		cmd := p.DeployCommand
		if a.nginx != nil {
			clog := log.With("command_id", cmd.GetCommandId(), "publish_id", cmd.GetPublishId(), "revision", cmd.GetRevision(), "action", cmd.GetAction().String())
			if reply, ok := a.st.reply(cmd.GetCommandId()); ok && cmd.GetCommandId() != "" {
				clog.Info("command redelivered; sending the recorded answer")
				return send(reply)
			}
			a.nginx.submit(clog, cmd, send)
			return nil
		}
		// Concurrently with other publishes' deploys, in order with this publish's own; a
		// failed send means a broken stream, which the receive loop notices.
		deploys.submit(cmd.GetPublishId(), func() {
			err := a.answer(log, send, cmd.GetCommandId(), func(log *slog.Logger) *agentv1.AgentMessage {
				sctx, span := commandSpan(ctx, "agent.deploy", cmd.GetTraceContext(), deployAttrs(cmd)...)
				res := a.deploy(sctx, log, cmd)
				if res == nil {
					span.End() // interrupted; the redelivery gets a span of its own
					return nil
				}
				finishDeploySpan(span, res)
				a.metrics.deployed(res)
				return &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_DeployResult{DeployResult: res}}
			})
			if err != nil && ctx.Err() == nil {
				log.Warn("send deploy result", "command_id", cmd.GetCommandId(), "err", err)
			}
		})
		return nil
	case *agentv1.ServerMessage_CredentialUpsert:
		cmd := p.CredentialUpsert
		return deploys.exclusive(func() error {
			return a.answer(log, send, cmd.GetCommandId(), func(log *slog.Logger) *agentv1.AgentMessage {
				_, span := commandSpan(ctx, "agent.credential_upsert", cmd.GetTraceContext(),
					attribute.String("imprun.command_id", cmd.GetCommandId()), attribute.String("imprun.credential_id", cmd.GetCredentialId()))
				msg := ackMessage(cmd.GetCommandId(), a.upsertCredential(log, cmd))
				finishAckSpan(span, msg)
				return msg
			})
		})
	case *agentv1.ServerMessage_CredentialRevoke:
		cmd := p.CredentialRevoke
		return deploys.exclusive(func() error {
			return a.answer(log, send, cmd.GetCommandId(), func(log *slog.Logger) *agentv1.AgentMessage {
				_, span := commandSpan(ctx, "agent.credential_revoke", cmd.GetTraceContext(),
					attribute.String("imprun.command_id", cmd.GetCommandId()), attribute.String("imprun.credential_id", cmd.GetCredentialId()))
				msg := ackMessage(cmd.GetCommandId(), a.revokeCredential(log, cmd))
				finishAckSpan(span, msg)
				return msg
			})
		})
	case *agentv1.ServerMessage_ReplaceToken:
		cmd := p.ReplaceToken
		return a.answer(log, send, cmd.GetCommandId(), func(log *slog.Logger) *agentv1.AgentMessage {
			return &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_TokenReplaced{TokenReplaced: a.replaceToken(log, cmd)}}
		})
	case *agentv1.ServerMessage_Close:
		return a.onClose(kind, p.Close)
	case *agentv1.ServerMessage_ConnectResponse:
		log.Warn("ignoring a second ConnectResponse")
		return nil
	default:
		// A newer server may send commands this agent does not know; ignoring them keeps the
		// stream up, and the server sees no answer for them.
		log.Warn("ignoring unknown server message", "type", fmt.Sprintf("%T", msg.Payload))
		return nil
	}
}

// answer runs a command at most once per command id: a redelivered command gets the answer
// recorded the first time. The answer is recorded before it is sent, so a crash of the agent
// in between cannot make it execute the command twice; a crash of the machine may (the
// journal is not fsynced), which is why every command is idempotent. A nil answer (the work
// was interrupted) is neither recorded nor sent, and the server will redeliver the command.
func (a *Agent) answer(log *slog.Logger, send func(*agentv1.AgentMessage) error, commandID string, run func(*slog.Logger) *agentv1.AgentMessage) error {
	log = log.With("command_id", commandID)
	if commandID != "" {
		if reply, ok := a.st.reply(commandID); ok {
			log.Info("command redelivered; sending the recorded answer")
			return send(reply)
		}
	} else {
		log.Warn("command without command_id; it cannot be deduplicated")
	}
	reply := run(log)
	if reply == nil {
		return nil
	}
	if commandID != "" {
		if err := a.st.record(commandID, reply); err != nil {
			// Answering matters more than remembering the answer: worst case a redelivery
			// runs the command again, and every command is idempotent.
			log.Error("record command answer", "err", err)
		}
	}
	return send(reply)
}

// onClose handles Close. Only REVOKED is final.
func (a *Agent) onClose(kind credentialKind, c *agentv1.Close) error {
	switch c.GetReason() {
	case agentv1.CloseReason_CLOSE_REASON_REVOKED:
		if err := DeleteIdentity(a.cfg.StateDir); err != nil {
			a.log.Error("delete identity after revocation", "err", err)
		}
		a.idMu.Lock()
		a.identity = nil
		a.idMu.Unlock()
		return fmt.Errorf("%w: %s", ErrRevoked, c.GetMessage())
	case agentv1.CloseReason_CLOSE_REASON_UNAUTHENTICATED:
		return a.refused(kind, c.GetMessage())
	case agentv1.CloseReason_CLOSE_REASON_SUPERSEDED:
		return fmt.Errorf("%w: %s", errSuperseded, c.GetMessage())
	default:
		return fmt.Errorf("server closed the stream (%s): %s", c.GetReason(), c.GetMessage())
	}
}

// replaceToken persists a rotated JWT (and refresh secret) before acknowledging it.
func (a *Agent) replaceToken(log *slog.Logger, cmd *agentv1.ReplaceToken) *agentv1.TokenReplaced {
	res := &agentv1.TokenReplaced{CommandId: cmd.GetCommandId()}
	cur := a.currentIdentity()
	if cur == nil {
		res.ErrorMessage = "agent has no identity to replace the token of"
		return res
	}
	if cmd.GetAgentJwt() == "" {
		res.ErrorMessage = "ReplaceToken carries no agent_jwt"
		return res
	}
	next := *cur
	next.AgentJWT = cmd.GetAgentJwt()
	next.JWTExpiresAt = time.Time{}
	if cmd.GetJwtExpiresAt() != nil {
		next.JWTExpiresAt = cmd.GetJwtExpiresAt().AsTime()
	}
	if cmd.GetRefreshSecret() != "" {
		next.RefreshSecret = cmd.GetRefreshSecret()
	}
	if err := a.saveIdentity(&next); err != nil {
		log.Error("persist replaced token", "err", err)
		res.ErrorMessage = "could not persist the new token"
		return res
	}
	log.Info("agent token replaced", "jwt_expires_at", next.JWTExpiresAt, "refresh_secret_rotated", cmd.GetRefreshSecret() != "")
	res.Success = true
	return res
}

func ackMessage(commandID string, err error) *agentv1.AgentMessage {
	ack := &agentv1.CommandAck{CommandId: commandID, Success: true}
	switch {
	case errors.Is(err, ErrStaleVersion):
		ack.Message = "ignored: stale version"
	case err != nil:
		ack.Success = false
		ack.Message = err.Error()
	}
	return &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandAck{CommandAck: ack}}
}
