package agentgw

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// session is one agent stream on this replica.
type session struct {
	id        uuid.UUID // written to agents.session_id; a newer stream elsewhere replaces it
	agentID   uuid.UUID
	clusterID uuid.UUID
	ip        string
	// clusterName labels the gateway's per-cluster series.
	clusterName string

	out    chan *agentv1.ServerMessage
	cancel context.CancelCauseFunc
	ctx    context.Context

	seen atomic.Int64 // unix nanos of the last message from the agent
	// claimed is set once the agent's row names this session (markConnected committed).
	claimed atomic.Bool
	// foreignAnswers counts answers to commands this stream was not sent.
	foreignAnswers atomic.Int32

	mu                 sync.Mutex
	sent               map[uuid.UUID]sentCommand // sent on this stream and not acknowledged
	resync             bool                      // the out queue overflowed: re-read the outbox when it drains
	closing            *agentv1.Close
	pendingRefreshHash string // refresh secret sent in ReplaceToken, stored once acknowledged
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
}

// sentCommand is what a session remembers of a command it sent until the agent answers.
type sentCommand struct {
	kind   string
	queued time.Time // when the command entered the outbox (for the delivery lag)
}

// sendQueue bounds what one slow agent can hold in memory; beyond it the session re-reads the
// outbox instead of queueing (commands are durable, so nothing is lost).
const sendQueue = 64

func newSession(parent context.Context, agentID, clusterID uuid.UUID, ip string) *session {
	ctx, cancel := context.WithCancelCause(parent)
	s := &session{id: uuid.New(), agentID: agentID, clusterID: clusterID, ip: ip,
		out: make(chan *agentv1.ServerMessage, sendQueue), ctx: ctx, cancel: cancel, sent: map[uuid.UUID]sentCommand{}}
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
func (s *session) end(cause error) { s.cancel(cause) }

// close sends Close{reason} as the last message, then ends the stream.
func (s *session) close(reason agentv1.CloseReason, msg string) {
	s.mu.Lock()
	if s.closing == nil {
		s.closing = &agentv1.Close{Reason: reason, Message: msg}
	}
	s.mu.Unlock()
	s.cancel(errClosed)
}

// offer queues a message without blocking; false means the queue is full.
func (s *session) offer(m *agentv1.ServerMessage) bool {
	select {
	case s.out <- m:
		return true
	default:
		return false
	}
}

// offerCommand queues a command unless this stream already carries it.
func (s *session) offerCommand(c models.AgentCommand, m *agentv1.ServerMessage) (queued bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.sent[c.ID]; dup {
		return false
	}
	select {
	case s.out <- m:
		s.sent[c.ID] = sentCommand{kind: c.Kind, queued: c.CreatedAt}
		return true
	default:
		s.resync = true
		return false
	}
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
