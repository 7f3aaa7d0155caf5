package agentgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/secrets"
	"github.com/imprun/imprun-server/store"
)

// errUnauthenticated is the one answer to every authentication failure; the reason is logged.
var errUnauthenticated = status.Error(codes.Unauthenticated, "unauthenticated")

var (
	errClosed  = errors.New("closed by the server")
	errRevoked = errors.New("agent revoked")
)

// authTimeout is how long a new stream may take to send its ConnectRequest.
const authTimeout = 10 * time.Second

// Connect serves one agent stream: authenticate the first message, register the session,
// send everything the agent has not acknowledged, then read heartbeats, results and acks
// until the stream ends.
//
// Memory: a stream's goroutine stacks are most of what it costs, so a stream has one goroutine
// of its own, this one, which reads the agent's messages. Writing takes a goroutine only while
// there is something to write (session.write), the JWT renewal is a timer, and the deep
// database calls of a connect run on short-lived goroutines (offStack), whose grown stacks go
// when they end.
func (g *Gateway) Connect(stream agentv1.AgentService_ConnectServer) error {
	cancel := streamCancel(stream.Context())
	if cancel == nil {
		return status.Error(codes.Internal, "the agent gateway is served without its stream tap (use NewGRPCServer)")
	}
	s, resp, err := g.accept(stream, cancel)
	if err != nil {
		return err
	}
	defer s.stop()
	defer g.sessions.remove(s)
	defer g.markDisconnected(s)
	// The ConnectResponse is the stream's first message: what others queued meanwhile waits
	// for it (the session was made holding its queue).
	if err := stream.Send(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_ConnectResponse{ConnectResponse: resp}}); err != nil {
		s.cancel(err)
		s.release() // drops what was queued: the stream is done
		return err
	}
	s.release()
	g.scheduleRenewal(s, time.Until(resp.JwtExpiresAt.AsTime())*3/4)
	resp = nil
	goOffStack(func() { g.sync(s.ctx, s) })

	ctx := s.ctx
	var rerr error
	for {
		msg, err := stream.Recv()
		if err != nil {
			rerr = err
			break
		}
		s.touch()
		g.handle(ctx, s, msg)
	}
	cause := context.Cause(ctx)
	if !s.byServer.Load() {
		if cause == nil || errors.Is(cause, context.Canceled) {
			cause = rerr
		}
		g.log.Info("agent stream ended", "agent_id", s.agentID, "cluster_id", s.clusterID, "reason", cause)
		g.metrics.Session("closed", "agent")
		return nil
	}
	g.log.Info("agent stream closed by the server", "agent_id", s.agentID, "cluster_id", s.clusterID, "reason", cause)
	g.metrics.Session("closed", closeReason(s, cause))
	if errors.Is(cause, errClosed) || cause == nil || errors.Is(cause, context.Canceled) {
		return nil
	}
	return status.Error(codes.Unavailable, cause.Error())
}

// streamCancelKey holds, in a Connect stream's context, the function that cancels it.
type streamCancelKey struct{}

// tapStream gives every Connect stream a context the gateway can cancel: grpc-go has no other
// way for a server to end a stream whose handler is blocked in Recv. It runs on the
// connection's reader before the stream exists, so it only wraps the context.
func tapStream(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != agentv1.AgentService_Connect_FullMethodName {
		return ctx, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	return context.WithValue(ctx, streamCancelKey{}, cancel), nil
}

func streamCancel(ctx context.Context) context.CancelCauseFunc {
	c, _ := ctx.Value(streamCancelKey{}).(context.CancelCauseFunc)
	return c
}

// scheduleRenewal renews the agent's JWT after d, so the agent can keep calling the REST API on
// a long-lived stream.
func (g *Gateway) scheduleRenewal(s *session, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	s.renewal = time.AfterFunc(d, func() {
		rt, exp, err := g.replaceToken(s.ctx, s, false)
		if err != nil {
			g.scheduleRenewal(s, time.Minute)
			return
		}
		s.offer(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_ReplaceToken{ReplaceToken: rt}})
		g.scheduleRenewal(s, time.Until(exp)*3/4)
	})
}

// offStack runs f on another goroutine and waits for it. A database call grows a stack to
// tens of KB; on a stream's long-lived goroutine that memory would stay for hours (a stack
// only shrinks by half per collection, and not below four times what is in use), 10,000 times.
// The goroutine is one of offStackIdle kept waiting for work, whose stacks have grown already:
// a new goroutine for each call grew its stack from 8 KB by copying it, three times a call and
// three calls a connect (24 KB of stack: 4.3 us a call against 1.0 us kept, BenchmarkOffStack).
// Kept goroutines shrink like any other while they wait.
func offStack(f func()) {
	done := make(chan struct{})
	task := func() {
		defer close(done)
		f()
	}
	goOffStack(task)
	<-done
}

// goOffStack runs f on one of offStack's kept goroutines, or on a new one that is kept after,
// and does not wait for it: the first sync of a connect (its reads grew a new goroutine's
// stack at every connect, as offStack's calls did).
func goOffStack(f func()) {
	select {
	case offStackTasks <- f: // a kept goroutine waits for work
	default:
		go offStackWorker(f)
	}
}

// offStackIdle is how many goroutines offStack keeps waiting for work at most.
const offStackIdle = 64

var (
	offStackTasks   = make(chan func()) // unbuffered: a send succeeds only if a worker waits
	offStackWaiting atomic.Int32
)

// offStackWorker runs task, then waits for more while fewer than offStackIdle wait.
func offStackWorker(task func()) {
	for {
		task()
		if offStackWaiting.Add(1) > offStackIdle {
			offStackWaiting.Add(-1)
			return
		}
		task = <-offStackTasks
		offStackWaiting.Add(-1)
	}
}

// accept authenticates the stream's first message and claims the agent for a new session.
// An error is what Connect returns; on success the ConnectResponse is still to be sent.
func (g *Gateway) accept(stream agentv1.AgentService_ConnectServer, cancel context.CancelCauseFunc) (*session, *agentv1.ConnectResponse, error) {
	ctx := stream.Context()
	ip := peerIP(ctx)

	first, err := recvWithin(stream, cancel, g.authTimeout)
	if err != nil {
		g.log.Info("agent stream refused", "ip", ip, "reason", "no first message: "+err.Error())
		g.metrics.AuthFailure("no_connect_request")
		return nil, nil, errUnauthenticated
	}
	req := first.GetConnectRequest()
	if req == nil {
		g.log.Info("agent stream refused", "ip", ip, "reason", "first message is not a ConnectRequest")
		g.metrics.AuthFailure("no_connect_request")
		return nil, nil, errUnauthenticated
	}
	if !g.guard.allowed(ip) {
		g.log.Info("agent stream refused", "ip", ip, "reason", "too many failed attempts from this address")
		g.metrics.AuthFailure("rate_limited")
		return nil, nil, errUnauthenticated
	}
	if !g.admit.enter(ctx) {
		g.log.Debug("agent stream refused: too many connects at once", "ip", ip, "agent_id", req.GetAgentId())
		g.metrics.Session("refused", "busy")
		return nil, nil, errBusy
	}
	defer g.admit.leave()
	if jwt, ok := req.Credential.(*agentv1.ConnectRequest_AgentJwt); ok {
		var s *session
		var resp *agentv1.ConnectResponse
		var agentID uuid.UUID
		offStack(func() { s, resp, agentID, err = g.acceptJWT(ctx, stream, cancel, jwt.AgentJwt, req, ip) })
		if err != nil {
			return nil, nil, g.refused(stream, req, ip, agentID, err)
		}
		return g.accepted(s, req, resp), resp, nil
	}
	var (
		agent models.Agent
		resp  *agentv1.ConnectResponse
	)
	offStack(func() { agent, resp, err = g.authenticate(ctx, req, ip) })
	if err != nil {
		return nil, nil, g.refused(stream, req, ip, agent.ID, err)
	}

	s := newSession(g, stream, cancel, agent.ID, agent.ClusterID, ip)
	s.clusterName = resp.GetClusterName()
	if old := g.sessions.add(s); old != nil {
		old.close(agentv1.CloseReason_CLOSE_REASON_SUPERSEDED, "a newer stream of this agent connected")
	}
	offStack(func() { err = g.markConnected(ctx, s, req) })
	if err != nil {
		g.sessions.remove(s)
		s.cancel(nil)
		if ctx.Err() != nil {
			// The agent went away while its claim was being written (a connect storm's agents
			// give up and retry): nothing is wrong with the server.
			g.log.Info("agent left before its connect was stored", "agent_id", agent.ID, "err", err)
		} else {
			g.log.Error("mark agent connected", "agent_id", agent.ID, "err", err)
		}
		return nil, nil, status.Error(codes.Unavailable, "try again")
	}
	return g.accepted(s, req, resp), resp, nil
}

// accepted logs and counts a stream whose agent was claimed, and completes its ConnectResponse.
func (g *Gateway) accepted(s *session, req *agentv1.ConnectRequest, resp *agentv1.ConnectResponse) *session {
	g.log.Info("agent connected", "agent_id", s.agentID, "cluster_id", s.clusterID, "ip", s.ip, "version", req.GetAgentVersion())
	g.metrics.Session("opened", credentialKind(req))
	resp.HeartbeatIntervalSeconds = int32(g.cfg.HeartbeatInterval / time.Second)
	if resp.HeartbeatIntervalSeconds < 1 {
		resp.HeartbeatIntervalSeconds = 1
	}
	return s
}

// refused logs and counts a connect that failed authentication (or could not be checked) and
// returns what Connect answers: Unavailable when the database is, a Close{REVOKED} then
// Unauthenticated for a revoked agent, Unauthenticated for every other failure.
func (g *Gateway) refused(stream agentv1.AgentService_ConnectServer, req *agentv1.ConnectRequest, ip string, agentID uuid.UUID, err error) error {
	if errors.Is(err, errTryAgain) {
		return status.Error(codes.Unavailable, "try again") // logged where it failed
	}
	if store.IsUnavailable(err) {
		// Not the agent's failure: it retries with the same credential.
		g.log.Warn("agent stream refused: the database is unavailable", "ip", ip, "err", err)
		return status.Error(codes.Unavailable, "try again")
	}
	g.guard.failed(ip)
	if errors.Is(err, errRevoked) {
		g.log.Info("revoked agent refused", "ip", ip, "agent_id", agentID)
		g.metrics.AuthFailure("revoked")
		_ = stream.Send(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_Close{Close: &agentv1.Close{
			Reason: agentv1.CloseReason_CLOSE_REASON_REVOKED, Message: "this agent was revoked"}}})
		return errUnauthenticated
	}
	var st interface{ GRPCStatus() *status.Status }
	if errors.As(err, &st) && st.GRPCStatus().Code() != codes.Unauthenticated {
		return err
	}
	g.log.Info("agent stream refused", "ip", ip, "agent_id", req.GetAgentId(), "reason", err.Error())
	g.metrics.AuthFailure(credentialKind(req) + "_refused")
	return errUnauthenticated
}

// errTryAgain is a connect that could not be stored (not the agent's failure: it retries).
var errTryAgain = errors.New("the connect could not be stored")

// acceptJWT authenticates an agent JWT and claims the agent for a new session in one statement
// (store.ClaimAgentByTokenAndRead: not revoked, the token's generation and cluster), which
// reads the agent's sync inputs and pending commands in the same round trip, then registers the
// session, superseding an older stream of the agent here only once the claim is made. agentID
// is the token's agent, for the log of a refusal.
//
// A revoke, delete or rotation of the agent notified between the claim and the registration
// would find the older session, or none: notified counts every such notification (controlSeq),
// and a connect that saw one meanwhile checks the agent's row once more. A command notified
// in between would find no session either: commandSeq counts those, and a connect that saw
// one leaves its pending commands to be read again by its first sync.
func (g *Gateway) acceptJWT(ctx context.Context, stream agentv1.AgentService_ConnectServer, cancel context.CancelCauseFunc, raw string,
	req *agentv1.ConnectRequest, ip string) (*session, *agentv1.ConnectResponse, uuid.UUID, error) {
	vt, err := g.signer.Verify(raw)
	if err != nil {
		return nil, nil, uuid.Nil, err
	}
	s := newSession(g, stream, cancel, vt.AgentID, vt.ClusterID, ip)
	seq := g.controlSeq.Load()
	cseq, listening := g.commandSeq.Load(), g.listening.Load()
	var read *store.ConnectRead
	claim, err := g.claimSession(ctx, s, req, func(c store.AgentConnection) (cl store.AgentTokenClaim, err error) {
		r := g.claims.do(ctx, store.ConnectClaim{Conn: c, Generation: vt.Generation})
		read = r.Read
		return r.Claim, r.Err
	})
	if err != nil {
		s.cancel(nil)
		switch {
		case ctx.Err() != nil:
			g.log.Info("agent left before its connect was stored", "agent_id", vt.AgentID, "err", err)
		case store.IsUnavailable(err):
			g.log.Warn("agent stream refused: the database is unavailable", "ip", ip, "err", err)
		default:
			g.log.Error("mark agent connected", "agent_id", vt.AgentID, "err", err)
		}
		return nil, nil, vt.AgentID, errTryAgain
	}
	if !claim.Claimed {
		s.cancel(nil)
		if !claim.Found {
			return nil, nil, vt.AgentID, fmt.Errorf("agent %s: %w", vt.AgentID, store.ErrNotFound)
		}
		if err := tokenStateErr(vt, claim.State); err != nil {
			return nil, nil, vt.AgentID, err
		}
		// The row changed while it was being claimed (a revoke or rotation committed
		// meanwhile): the agent asks again, and the next check sees which.
		g.log.Info("agent row changed during its connect; the agent retries", "agent_id", vt.AgentID)
		return nil, nil, vt.AgentID, errTryAgain
	}
	s.clusterName = claim.ClusterName
	if g.claimedHook != nil {
		g.claimedHook(vt.AgentID)
	}
	if old := g.sessions.add(s); old != nil {
		old.close(agentv1.CloseReason_CLOSE_REASON_SUPERSEDED, "a newer stream of this agent connected")
	}
	if g.controlSeq.Load() != seq {
		// The stream is registered: a notification from now on finds it. One that came before
		// may have missed it; the row says whether the token still stands.
		st, err := g.store.AgentToken(ctx, vt.AgentID)
		if err == nil {
			err = tokenStateErr(vt, st)
		}
		if err != nil {
			g.sessions.remove(s)
			g.markDisconnected(s)
			s.cancel(nil)
			if !errors.Is(err, errRevoked) && (store.IsUnavailable(err) || ctx.Err() != nil) {
				err = errTryAgain
			}
			return nil, nil, vt.AgentID, err
		}
	}
	if read != nil && listening && g.commandSeq.Load() == cseq {
		// No command was notified since before the claim: the pending commands read with it
		// are all there is, and what is notified from now on finds the session. Otherwise the
		// first sync reads them again, after the registration.
		s.connectRead = read
	}
	a := models.Agent{ID: vt.AgentID, ClusterID: vt.ClusterID, TokenGeneration: vt.Generation}
	return s, g.namedConnectResponse(a, "", claim.ClusterName), vt.AgentID, nil
}

// handle acts on one message from an authenticated agent.
func (g *Gateway) handle(ctx context.Context, s *session, msg *agentv1.AgentMessage) {
	switch p := msg.Payload.(type) {
	case *agentv1.AgentMessage_Heartbeat:
		ask := g.presence.mark(s, p.Heartbeat)
		s.reply(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_HeartbeatAck{HeartbeatAck: &agentv1.HeartbeatAck{ServerTime: timestamppb.Now(), SendApplied: ask}}})
	case *agentv1.AgentMessage_DeployResult:
		r := p.DeployResult
		id, err := uuid.Parse(r.GetCommandId())
		if err != nil {
			g.log.Info("deploy result with a bad command id", "agent_id", s.agentID, "command_id", r.GetCommandId())
			return
		}
		sent, ok := s.acked(id)
		if !ok {
			g.foreignAnswer(ctx, s, "DeployResult", r.GetCommandId())
			return
		}
		g.metrics.Acknowledged(sent.kind, sent.queued)
		status := "failed"
		if r.GetStatus() == agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED {
			status = "succeeded"
		}
		res := map[string]any{
			"publish_id": r.GetPublishId(), "revision": r.GetRevision(), "status": status,
			"message": models.Cut(r.GetMessage(), 2000), "checksum": r.GetChecksum(), "applied_resources": appliedResources(r.GetAppliedResources()),
		}
		if tc := traceContext(r.GetTraceContext()); tc != nil {
			res[resultTraceKey] = tc
		}
		g.deliveries.add(store.DeliveryRecord{CommandID: id, AgentID: s.agentID, Status: models.DeliveryAcked, At: time.Now().UTC(), ResultStatus: status, Result: res,
			Kind: sent.kind, ClusterID: s.clusterID, Payload: sent.payload})
	case *agentv1.AgentMessage_CommandAck:
		a := p.CommandAck
		id, err := uuid.Parse(a.GetCommandId())
		if err != nil {
			return
		}
		sent, ok := s.acked(id)
		if !ok {
			g.foreignAnswer(ctx, s, "CommandAck", a.GetCommandId())
			return
		}
		g.metrics.Acknowledged(sent.kind, sent.queued)
		status := "failed"
		if a.GetSuccess() {
			status = "succeeded"
		}
		res := map[string]any{"success": a.GetSuccess(), "message": models.Cut(a.GetMessage(), 2000)}
		if tc := traceContext(a.GetTraceContext()); tc != nil {
			res[resultTraceKey] = tc
		}
		g.deliveries.add(store.DeliveryRecord{CommandID: id, AgentID: s.agentID, Status: models.DeliveryAcked, At: time.Now().UTC(),
			ResultStatus: status, Result: res, Kind: sent.kind, ClusterID: s.clusterID, Payload: sent.payload})
	case *agentv1.AgentMessage_TokenReplaced:
		g.tokenReplaced(ctx, s, p.TokenReplaced)
	case *agentv1.AgentMessage_ConnectRequest:
		g.log.Info("second ConnectRequest on a stream ignored", "agent_id", s.agentID)
	}
}

func appliedResources(rs []*agentv1.AppliedResource) []map[string]any {
	out := make([]map[string]any, 0, len(rs))
	for _, r := range rs {
		out = append(out, map[string]any{
			"kind": r.GetKind(), "name": r.GetName(), "namespace": r.GetNamespace(),
			"status": strings.ToLower(strings.TrimPrefix(r.GetStatus().String(), "APPLIED_RESOURCE_STATUS_")), "message": models.Cut(r.GetMessage(), 500),
		})
	}
	return out
}

// sync sends the session every command its agent has not acknowledged, in outbox order. On a
// new stream, what the agent lacks of its cluster's desired state is enqueued first.
func (g *Gateway) sync(ctx context.Context, s *session) {
	s.mu.Lock()
	first := !s.repairChecked
	s.repairChecked = true
	pre := s.connectRead
	s.connectRead = nil
	s.mu.Unlock()
	// The reads run on a context of their own, bounded in time, not one that the stream's
	// context cancels: every statement on a child of the stream's context would leave a map of
	// children behind in it for the stream's whole life. A stream that ends meanwhile refuses
	// what is offered.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()
	var (
		cmds []models.AgentCommand
		read bool
		err  error
	)
	if first {
		cmds, read = g.repairOnConnect(dctx, s, pre)
	}
	if !read {
		cmds, err = g.store.PendingCommands(dctx, s.clusterID, s.agentID)
	}
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("read pending commands", "agent_id", s.agentID, "err", err)
			s.mu.Lock()
			s.resync = true
			s.mu.Unlock()
		}
		return
	}
	for _, c := range cmds {
		g.deliver(s, c)
	}
}

// syncTimeout bounds the reads of one sync.
const syncTimeout = 30 * time.Second

// deliver queues c on s and records that it was sent.
func (g *Gateway) deliver(s *session, c models.AgentCommand) {
	m, err := g.toMessage(c)
	if err != nil {
		g.log.Error("unrenderable command skipped", "command_id", c.ID, "kind", c.Kind, "err", err)
		return
	}
	g.deliverMessage(s, c, outMessage{m: m})
}

// deliverMessage queues c, rendered as m, on s and records that it was sent.
func (g *Gateway) deliverMessage(s *session, c models.AgentCommand, m outMessage) {
	if s.offerCommand(c, m) {
		g.metrics.Command(c.Kind, "sent", 1)
		g.traceDelivery(s, c)
		g.deliveries.add(store.DeliveryRecord{CommandID: c.ID, AgentID: s.agentID, Status: models.DeliverySent, At: time.Now().UTC()})
	}
}

func peerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return models.Cut(p.Addr.String(), 45)
	}
	return models.Cut(host, 45)
}

// recvWithin reads the stream's first message on the handler's own goroutine, and ends the
// stream (cancel: the agent sees it cancelled, not refused) if it has not come within d. A
// goroutine of its own for the read, as before, grew a new stack to decode the message at
// every connect: 4 % of a reconnecting fleet's CPU.
func recvWithin(stream agentv1.AgentService_ConnectServer, cancel context.CancelCauseFunc, d time.Duration) (*agentv1.AgentMessage, error) {
	late := fmt.Errorf("no ConnectRequest within %s", d)
	t := time.AfterFunc(d, func() { cancel(late) })
	m, err := stream.Recv()
	if !t.Stop() {
		return nil, late
	}
	return m, err
}

// authenticate checks the ConnectRequest's registration token or refresh secret and returns
// the agent with the ConnectResponse to send (an agent JWT goes to acceptJWT).
func (g *Gateway) authenticate(ctx context.Context, req *agentv1.ConnectRequest, ip string) (models.Agent, *agentv1.ConnectResponse, error) {
	switch cred := req.Credential.(type) {
	case *agentv1.ConnectRequest_RegistrationToken:
		return g.register(ctx, cred.RegistrationToken, req, ip)
	case *agentv1.ConnectRequest_RefreshSecret:
		id, err := uuid.Parse(req.GetAgentId())
		if err != nil {
			return models.Agent{}, nil, errors.New("refresh without a valid agent_id")
		}
		return g.refresh(ctx, id, cred.RefreshSecret, ip)
	}
	return models.Agent{}, nil, errors.New("ConnectRequest without a credential")
}

func (g *Gateway) connectResponse(ctx context.Context, a models.Agent, refreshSecret string) (*agentv1.ConnectResponse, error) {
	name, err := g.store.ClusterName(ctx, a.ClusterID)
	if err != nil {
		return nil, err
	}
	return g.namedConnectResponse(a, refreshSecret, name), nil
}

// namedConnectResponse is connectResponse with the cluster's name known.
func (g *Gateway) namedConnectResponse(a models.Agent, refreshSecret, clusterName string) *agentv1.ConnectResponse {
	tok, exp := g.signer.Mint(a.ID, a.ClusterID, a.TokenGeneration)
	return &agentv1.ConnectResponse{AgentId: a.ID.String(), ClusterId: a.ClusterID.String(), ClusterName: clusterName,
		AgentJwt: tok, JwtExpiresAt: timestamppb.New(exp), RefreshSecret: refreshSecret}
}

// register consumes one use of a registration token and creates the agent.
func (g *Gateway) register(ctx context.Context, token string, req *agentv1.ConnectRequest, ip string) (models.Agent, *agentv1.ConnectResponse, error) {
	var a models.Agent
	refresh := secrets.New("imprr_")
	name := strings.TrimSpace(req.GetAgentName())
	if name != "" && !validAgentName(name) {
		return a, nil, status.Error(codes.InvalidArgument, "agent_name must be 1-63 lower-case letters, digits and dashes")
	}
	tokenHash := secrets.Hash(token)
	if g.guard.knownUnknown(tokenHash) {
		return a, nil, errors.New("unknown registration token (remembered)")
	}
	err := g.store.InTx(ctx, func(ctx context.Context) error {
		t, err := g.store.ConsumeRegistrationToken(ctx, tokenHash)
		var unusable *store.TokenUnusableError
		switch {
		case errors.Is(err, store.ErrNotFound):
			g.guard.rememberUnknown(tokenHash)
			return errors.New("unknown registration token")
		case errors.As(err, &unusable):
			return unusable
		case err != nil:
			return errors.New("unknown registration token")
		}
		if name == "" {
			name = "agent-" + strings.ToLower(secrets.New("")[:8])
			name = strings.Map(func(r rune) rune {
				if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
					return r
				}
				return 'x'
			}, name)
		}
		h := secrets.Hash(refresh)
		a = models.Agent{ClusterID: t.ClusterID, Name: name, Status: models.AgentPending, Version: models.Cut(req.GetAgentVersion(), 50),
			Hostname: models.Cut(req.GetHostname(), 255), IPAddress: ip, TokenGeneration: 1, RefreshSecretHash: &h, RegisteredWith: &t.ID,
			Applied: models.JSON[[]models.AppliedRevision]{V: []models.AppliedRevision{}}}
		err = g.store.CreateAgent(ctx, &a,
			models.AgentEvent{Type: models.EventRegistered, Message: "registered with token " + t.Prefix + "…", IPAddress: ip, Metadata: models.JSONMap{"registration_token_id": t.ID.String()}},
			models.AgentEvent{Type: models.EventTokenIssued, Message: "agent JWT and refresh secret issued", IPAddress: ip, Metadata: models.JSONMap{}})
		if errors.Is(err, store.ErrConflict) {
			return status.Errorf(codes.AlreadyExists, "an agent named %q exists in this cluster", name)
		}
		return err
	})
	if err != nil {
		return a, nil, err
	}
	resp, err := g.connectResponse(ctx, a, refresh)
	return a, resp, err
}

// refresh authenticates with agent id + refresh secret and rotates the refresh secret.
func (g *Gateway) refresh(ctx context.Context, id uuid.UUID, secret, ip string) (models.Agent, *agentv1.ConnectResponse, error) {
	var a models.Agent
	next := secrets.New("imprr_")
	err := g.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		if a, err = g.store.LockAgent(ctx, id); err != nil {
			return errors.New("unknown agent")
		}
		if a.Status == models.AgentRevoked {
			return errRevoked
		}
		if a.RefreshSecretHash == nil || !secrets.Equal(*a.RefreshSecretHash, secrets.Hash(secret)) {
			return errors.New("refresh secret does not match")
		}
		h := secrets.Hash(next)
		a.RefreshSecretHash = &h
		if err := g.store.SetRefreshSecret(ctx, a.ID, h); err != nil {
			return err
		}
		return g.store.AddAgentEvent(ctx, &models.AgentEvent{AgentID: a.ID, ClusterID: a.ClusterID, Type: models.EventTokenIssued,
			Message: "agent JWT renewed with the refresh secret", IPAddress: ip, Metadata: models.JSONMap{}})
	})
	if err != nil {
		return a, nil, err
	}
	resp, err := g.connectResponse(ctx, a, next)
	return a, resp, err
}

func validAgentName(s string) bool {
	if len(s) < 1 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' && i > 0 && i < len(s)-1)
		if !ok {
			return false
		}
	}
	return true
}

// markConnected claims the agent row for this session and this replica (whose lease vouches
// for the agent from now on).
func (g *Gateway) markConnected(ctx context.Context, s *session, req *agentv1.ConnectRequest) error {
	claim, err := g.claimSession(ctx, s, req, func(c store.AgentConnection) (store.AgentTokenClaim, error) {
		ok, err := g.store.MarkAgentConnected(ctx, c)
		return store.AgentTokenClaim{Claimed: ok}, err
	})
	if err == nil && !claim.Claimed {
		err = errRevoked
	}
	return err
}

// claimSession claims the agent's row for s with claim, from what the ConnectRequest says it
// runs, and once claimed records on s what the row holds.
func (g *Gateway) claimSession(ctx context.Context, s *session, req *agentv1.ConnectRequest,
	claim func(store.AgentConnection) (store.AgentTokenClaim, error)) (store.AgentTokenClaim, error) {
	applied := toApplied(req.GetApplied())
	creds := req.GetCredentialChecksum()
	if len(creds) > 64 {
		creds = ""
	}
	now := time.Now().UTC()
	res, err := claim(store.AgentConnection{AgentID: s.agentID, ClusterID: s.clusterID, SessionID: s.id, ReplicaID: g.replica, IP: s.ip, At: now,
		Version: req.GetAgentVersion(), Hostname: req.GetHostname(), Applied: applied, CredentialChecksum: creds})
	if err != nil || !res.Claimed {
		return res, err
	}
	sig, _ := json.Marshal(applied)
	s.persisted(string(sig), creds)
	s.mu.Lock()
	s.appliedDigest = appliedDigest(applied)
	s.mu.Unlock()
	s.claimed.Store(true)
	return res, nil
}

// markDisconnected releases the agent row, unless a newer session has claimed it already; its
// last_heartbeat_at becomes the last time this stream heard from the agent.
func (g *Gateway) markDisconnected(s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.presence.forget(s)
	reason := "stream ended"
	if c := context.Cause(s.ctx); c != nil && !errors.Is(c, context.Canceled) {
		reason = c.Error()
	}
	if err := g.store.MarkAgentDisconnected(ctx, store.AgentDisconnection{AgentID: s.agentID, ClusterID: s.clusterID, SessionID: s.id,
		IP: s.ip, Reason: reason, LastSeen: s.lastSeen().UTC()}); err != nil {
		g.log.Warn("mark agent disconnected", "agent_id", s.agentID, "err", err)
	}
}

// replaceToken mints a JWT for the agent's current generation and, when rotate is set, a new
// refresh secret that becomes valid once the agent acknowledges it.
func (g *Gateway) replaceToken(ctx context.Context, s *session, rotate bool) (*agentv1.ReplaceToken, time.Time, error) {
	a, err := g.store.GetAgent(ctx, s.agentID)
	if err != nil {
		return nil, time.Time{}, err
	}
	tok, exp := g.signer.Mint(a.ID, a.ClusterID, a.TokenGeneration)
	rt := &agentv1.ReplaceToken{CommandId: uuid.NewString(), AgentJwt: tok, JwtExpiresAt: timestamppb.New(exp)}
	if rotate {
		secret := secrets.New("imprr_")
		rt.RefreshSecret = secret
		s.mu.Lock()
		s.pendingRefreshHash = secrets.Hash(secret)
		s.mu.Unlock()
	}
	return rt, exp, nil
}

// MaxForeignAnswers is how many answers to commands it was never sent a stream may send before
// it is closed; each is a security event.
const MaxForeignAnswers = 5

// foreignAnswer refuses an answer to a command this stream was not sent: a command of another
// cluster or agent, or one it already answered. Nothing is stored or passed on; the attempt is
// logged and recorded as an agent event, and a stream that keeps trying is closed.
func (g *Gateway) foreignAnswer(ctx context.Context, s *session, kind, commandID string) {
	n := s.foreignAnswers.Add(1)
	g.log.Warn("security: agent answered a command that was not sent to it; refused", "agent_id", s.agentID, "cluster_id", s.clusterID,
		"message_type", kind, "command_id", models.Cut(commandID, 64), "ip", s.ip, "count", n)
	if n <= MaxForeignAnswers {
		_ = g.store.AddAgentEvent(ctx, &models.AgentEvent{AgentID: s.agentID, ClusterID: s.clusterID, Type: models.EventProtocolViolation,
			Message: fmt.Sprintf("%s for command %s, which was not sent to this agent: refused", kind, models.Cut(commandID, 64)), IPAddress: s.ip})
	}
	if n == MaxForeignAnswers {
		s.close(agentv1.CloseReason_CLOSE_REASON_PROTOCOL_ERROR, "answers to commands that were not sent to this agent")
	}
}

func (g *Gateway) tokenReplaced(ctx context.Context, s *session, r *agentv1.TokenReplaced) {
	s.mu.Lock()
	h := s.pendingRefreshHash
	s.pendingRefreshHash = ""
	s.mu.Unlock()
	if !r.GetSuccess() {
		_ = g.store.AddAgentEvent(ctx, &models.AgentEvent{AgentID: s.agentID, ClusterID: s.clusterID, Type: models.EventError,
			Message: "agent could not store its new token: " + models.Cut(r.GetErrorMessage(), 500), IPAddress: s.ip})
		return
	}
	if h != "" {
		if err := g.store.SetRefreshSecret(ctx, s.agentID, h); err != nil {
			g.log.Warn("store rotated refresh secret", "agent_id", s.agentID, "err", err)
			return
		}
		_ = g.store.AddAgentEvent(ctx, &models.AgentEvent{AgentID: s.agentID, ClusterID: s.clusterID, Type: models.EventTokenReplaced,
			Message: "agent stored its new JWT and refresh secret", IPAddress: s.ip})
	}
}

// credentialKind names how a ConnectRequest authenticates (a bounded metric label).
func credentialKind(req *agentv1.ConnectRequest) string {
	switch req.GetCredential().(type) {
	case *agentv1.ConnectRequest_RegistrationToken:
		return "registration_token"
	case *agentv1.ConnectRequest_AgentJwt:
		return "agent_jwt"
	case *agentv1.ConnectRequest_RefreshSecret:
		return "refresh_secret"
	}
	return "none"
}

// closeReason names why the server ended a stream (a bounded metric label).
func closeReason(s *session, cause error) string {
	closing := s.closingReason()
	switch {
	case closing != nil:
		return strings.ToLower(strings.TrimPrefix(closing.GetReason().String(), "CLOSE_REASON_"))
	case cause == nil || errors.Is(cause, context.Canceled):
		return "server_stopped"
	}
	return "server_error"
}
