package agentgw

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
)

// session is one agent stream on this replica.
//
// A stream costs one long-lived goroutine, the gRPC handler, which reads the agent's messages
// (Connect). Nothing waits to write: a message for the agent is queued and the stream's writer
// (write) runs on the gateway's writer pool for as long as the queue holds messages, so an idle
// stream has no writer at all. Ending the stream from the server cancels the stream's own context (see
// streamCancel), which returns the handler's Recv.
type session struct {
	id        uuid.UUID // written to agents.session_id; a newer stream elsewhere replaces it
	agentID   uuid.UUID
	clusterID uuid.UUID
	ip        string
	// clusterName labels the gateway's per-cluster series.
	clusterName string

	g      *Gateway
	stream agentv1.AgentService_ConnectServer // Send only on the writer (wmu's writing)
	ctx    context.Context                    // the stream's context; cancel ends the stream
	cancel context.CancelCauseFunc

	seen atomic.Int64 // unix nanos of the last message from the agent
	// claimed is set once the agent's row names this session (markConnected committed).
	claimed atomic.Bool
	// foreignAnswers counts answers to commands this stream was not sent.
	foreignAnswers atomic.Int32
	// byServer is set when the server ended the stream (end, close), not the agent.
	byServer atomic.Bool

	// wmu guards the send queue and who writes it.
	wmu     sync.Mutex
	queue   []outMessage // nil while idle
	writing bool         // a goroutine is draining queue
	// closing is the Close message being sent (the stream's last message); offers after it are
	// dropped.
	closing *agentv1.Close
	stopped bool          // the handler is returning: nothing may be sent any more
	written chan struct{} // closed by the writer that stops while stopped is set

	mu                 sync.Mutex
	sent               map[uuid.UUID]sentCommand // sent on this stream and not acknowledged (nil: none yet)
	resync             bool                      // the send queue overflowed: re-read the outbox when it drains
	pendingRefreshHash string                    // refresh secret sent in ReplaceToken, stored once acknowledged
	// lastApplied is the applied revisions (JSON) the agent's row holds; markConnected writes
	// them first.
	lastApplied string
	// appliedDigest is the digest of the applied set the server holds for this stream (what
	// a digest-only heartbeat must match), lastCreds the credential checksum written last.
	appliedDigest string
	lastCreds     string
	// lastRepair is when this agent was last sent a drift repair (rate limit); ignoredSig the
	// last applied report logged as ignored.
	lastRepair    time.Time
	ignoredSig    string
	repairChecked bool // the connect-time repair ran
	// connectRead is what a JWT connect read with its claim, for its first sync (nil: read it
	// then).
	connectRead *store.ConnectRead
	renewal     *time.Timer // renews the agent's JWT (scheduleRenewal)

	// sendComp is the stream's send compressor (sendCompressor), sendCompKnown whether grpc-go
	// said.
	sendComp      string
	sendCompKnown bool
}

// outMessage is a message queued for the agent: m, or the same message already encoded for the
// wire once for many streams (pm, see preparedFor).
type outMessage struct {
	m  *agentv1.ServerMessage
	pm *grpc.PreparedMsg
}

// sentCommand is what a session remembers of a command it sent until the agent answers.
type sentCommand struct {
	kind    string
	queued  time.Time      // when the command entered the outbox (for the delivery lag)
	payload models.JSONMap // what the result is passed on with (shared, never changed)
}

// sendQueue bounds what one slow agent can hold in memory; beyond it the session re-reads the
// outbox instead of queueing (commands are durable, so nothing is lost).
const sendQueue = 64

// closeGrace is how long the Close message may take to reach an agent that does not read
// (its flow-control window full) before the stream is ended without it.
const closeGrace = 5 * time.Second

func newSession(g *Gateway, stream agentv1.AgentService_ConnectServer, cancel context.CancelCauseFunc, agentID, clusterID uuid.UUID, ip string) *session {
	// Made holding its queue (writing): nothing is written before the ConnectResponse, which
	// Connect sends itself and then calls release.
	s := &session{id: uuid.New(), agentID: agentID, clusterID: clusterID, ip: ip, g: g, stream: stream, ctx: stream.Context(), cancel: cancel, writing: true}
	s.sendComp, s.sendCompKnown = streamCompressor(s.ctx)
	s.touch()
	return s
}

// persisted records what the agent's row holds after a heartbeat flush.
func (s *session) persisted(appliedSig, creds string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if appliedSig != "" {
		s.lastApplied = appliedSig
	}
	if creds != "" {
		s.lastCreds = creds
	}
}

func (s *session) persistedCreds() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastCreds
}

func (s *session) persistedApplied() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastApplied
}

func (s *session) touch()              { s.seen.Store(time.Now().UnixNano()) }
func (s *session) lastSeen() time.Time { return time.Unix(0, s.seen.Load()) }

// end stops the stream without a Close message (the agent reconnects).
func (s *session) end(cause error) {
	s.byServer.Store(true)
	s.cancel(cause)
}

// close sends Close{reason} as the last message, then ends the stream. What is still queued is
// dropped (commands are durable; the agent gets them on its next stream).
func (s *session) close(reason agentv1.CloseReason, msg string) {
	s.wmu.Lock()
	if s.closing != nil || s.stopped {
		s.wmu.Unlock()
		return
	}
	s.byServer.Store(true)
	s.closing = &agentv1.Close{Reason: reason, Message: msg}
	s.queue = append(s.queue[:0], outMessage{m: &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_Close{Close: s.closing}}})
	start := !s.writing
	s.writing = true
	s.wmu.Unlock()
	// An agent that does not read would keep the writer in Send: end the stream anyway.
	time.AfterFunc(closeGrace, func() { s.cancel(errClosed) })
	if start {
		s.g.writers.run(s)
	}
}

// closingReason is the Close being sent, if any.
func (s *session) closingReason() *agentv1.Close {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.closing
}

// offer queues a message without blocking and has a writer send it; false means the queue
// is full (or the stream is ending).
func (s *session) offer(m *agentv1.ServerMessage) bool {
	s.wmu.Lock()
	ok, start := s.enqueueLocked(outMessage{m: m})
	s.wmu.Unlock()
	if start {
		s.g.writers.run(s)
	}
	return ok
}

// reply queues a message from the stream's own reader and, when no writer is running, writes
// the queue itself: an answer to the agent (a heartbeat ack) costs no goroutine. Only the
// handler's goroutine may call it; a slow agent then delays its own next read, nobody else's.
func (s *session) reply(m *agentv1.ServerMessage) {
	s.wmu.Lock()
	_, start := s.enqueueLocked(outMessage{m: m})
	s.wmu.Unlock()
	if start {
		s.write()
	}
}

// enqueueLocked appends m; start says the caller must run the writer.
func (s *session) enqueueLocked(m outMessage) (ok, start bool) {
	if s.closing != nil || s.stopped || len(s.queue) >= sendQueue {
		return false, false
	}
	s.queue = append(s.queue, m)
	if s.writing {
		return true, false
	}
	s.writing = true
	return true, true
}

// write sends the queue until it is empty. One writer runs at a time (writing), so Send is
// never called concurrently. The Close message is the last one: once it is sent (or the stream
// fails) the stream is ended.
func (s *session) write() {
	for {
		s.wmu.Lock()
		if len(s.queue) == 0 || s.stopped || s.ctx.Err() != nil {
			s.queue = nil
			s.writing = false
			if s.stopped && s.written != nil {
				close(s.written)
				s.written = nil
			}
			s.wmu.Unlock()
			if s.takeResync() && s.ctx.Err() == nil {
				goOffStack(func() { s.g.sync(s.ctx, s) }) // off this goroutine, which may be the handler's
			}
			return
		}
		m := s.queue[0]
		s.queue[0] = outMessage{}
		s.queue = s.queue[1:]
		s.wmu.Unlock()
		var err error
		if m.pm != nil {
			err = s.stream.SendMsg(m.pm)
		} else {
			err = s.stream.Send(m.m)
		}
		if err != nil {
			s.cancel(err)
			continue
		}
		if m.m.GetClose() != nil {
			s.cancel(errClosed)
		}
	}
}

// release writes what was queued while the session held its queue for the ConnectResponse.
// It runs on the handler's goroutine.
func (s *session) release() {
	s.wmu.Lock()
	if len(s.queue) == 0 {
		s.writing = false
		s.wmu.Unlock()
		return
	}
	s.wmu.Unlock()
	s.write()
}

// stop ends the session's writing before the handler returns: a running writer finishes the
// message it is sending (the stream's context is cancelled by then, so it does not wait) and
// nothing is sent after.
func (s *session) stop() {
	s.cancel(nil)
	s.mu.Lock()
	if s.renewal != nil {
		s.renewal.Stop()
	}
	s.mu.Unlock()
	s.wmu.Lock()
	s.stopped = true
	var wait chan struct{}
	if s.writing {
		s.written = make(chan struct{})
		wait = s.written
	}
	s.wmu.Unlock()
	if wait != nil {
		<-wait
	}
}

// offerCommand queues a command unless this stream already carries it.
func (s *session) offerCommand(c models.AgentCommand, m outMessage) (queued bool) {
	s.mu.Lock()
	if _, dup := s.sent[c.ID]; dup {
		s.mu.Unlock()
		return false
	}
	s.wmu.Lock()
	ok, start := s.enqueueLocked(m)
	s.wmu.Unlock()
	if ok {
		if s.sent == nil {
			s.sent = map[uuid.UUID]sentCommand{}
		}
		s.sent[c.ID] = sentCommand{kind: c.Kind, queued: c.CreatedAt, payload: c.Payload}
	} else {
		s.resync = true
	}
	s.mu.Unlock()
	if start {
		s.g.writers.run(s)
	}
	return ok
}

// sendCompressor is the compressor of what this stream sends ("" for none), false when grpc-go
// does not say: a message encoded for one stream fits another only when they agree.
func (s *session) sendCompressor() (string, bool) { return s.sendComp, s.sendCompKnown }

// streamCompressor reads a stream's send compressor, which grpc-go settles from the agent's
// request headers before the handler runs (the gateway never changes it). It is read once: the
// lookup through the stream's context, for every stream of a broadcast, was a twentieth of the
// broadcast's CPU.
func streamCompressor(ctx context.Context) (string, bool) {
	c, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ SendCompress() string })
	if !ok {
		return "", false
	}
	return c.SendCompress(), true
}

// acked forgets a command acknowledged on this stream and returns what it was.
func (s *session) acked(id uuid.UUID) (sentCommand, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.sent[id]
	delete(s.sent, id)
	return c, ok
}

func (s *session) takeResync() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.resync
	s.resync = false
	return r
}

// registry holds this replica's sessions by agent and by cluster.
type registry struct {
	mu        sync.RWMutex
	byAgent   map[uuid.UUID]*session
	byCluster map[uuid.UUID]map[uuid.UUID]*session
}

func newRegistry() *registry {
	return &registry{byAgent: map[uuid.UUID]*session{}, byCluster: map[uuid.UUID]map[uuid.UUID]*session{}}
}

// add registers s and returns the session of the same agent it replaces, if any.
func (r *registry) add(s *session) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.byAgent[s.agentID]
	r.byAgent[s.agentID] = s
	m := r.byCluster[s.clusterID]
	if m == nil {
		m = map[uuid.UUID]*session{}
		r.byCluster[s.clusterID] = m
	}
	m[s.agentID] = s
	return old
}

// remove unregisters s if it is still the agent's current session.
func (r *registry) remove(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byAgent[s.agentID] != s {
		return
	}
	delete(r.byAgent, s.agentID)
	if m := r.byCluster[s.clusterID]; m != nil {
		delete(m, s.agentID)
		if len(m) == 0 {
			delete(r.byCluster, s.clusterID)
		}
	}
}

func (r *registry) get(agentID uuid.UUID) *session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byAgent[agentID]
}

func (r *registry) inCluster(clusterID uuid.UUID) []*session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*session, 0, len(r.byCluster[clusterID]))
	for _, s := range r.byCluster[clusterID] {
		out = append(out, s)
	}
	return out
}

func (r *registry) all() []*session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*session, 0, len(r.byAgent))
	for _, s := range r.byAgent {
		out = append(out, s)
	}
	return out
}

func (r *registry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byAgent)
}
