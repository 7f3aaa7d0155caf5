package agentgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
)

// ResultSink passes an acknowledged command result on (to its workflow). It must be
// idempotent: after a crash the sweeper passes the same result again.
type ResultSink interface {
	PassOn(ctx context.Context, r store.UnpassedResult) error
}

// resultRecorder is a ResultSink that can record a whole batch of results before they are
// passed on one by one (PassOn then skips what is Recorded).
type resultRecorder interface {
	RecordResults(ctx context.Context, rs []store.UnpassedResult) error
}

// resultSettler is a ResultSink that can tell, before a result is stored, that passing it on
// would do nothing (TemporalSink: a cluster's later credential acknowledgements once one was
// signalled). Such a result is stored already passed on, in the statement that stores it,
// instead of being marked in a second one: a credential broadcast to 10,000 agents wrote every
// delivery row twice.
type resultSettler interface {
	Settled(r store.UnpassedResult) bool
}

// Config tunes the gateway.
type Config struct {
	DatabaseURL       string // for the LISTEN connection
	HeartbeatInterval time.Duration
	MissedHeartbeats  int
	FlushInterval     time.Duration // how often the replica's lease is renewed and changed heartbeats reach Postgres
	// ReplicaName labels this replica's lease for people (the host name); the lease itself is
	// keyed by an id drawn when the gateway is made, so replicas sharing a name never mix.
	ReplicaName string
	// DriftCheckInterval is how often the agents connected here are compared with their
	// clusters' desired state (default: the heartbeat interval).
	DriftCheckInterval time.Duration
	// DriftGrace is how long applied may lag an acknowledged revision before it is drifted
	// (default: two heartbeat intervals plus a flush).
	DriftGrace time.Duration
	// RepairEvery is the shortest time between two repairs of one agent (default 1 min).
	RepairEvery time.Duration
	// MaxRepairs is how many repairs of one revision an agent gets before it is reported
	// failed (default 3).
	MaxRepairs int
	// ConnectSlots is how many connects do their database work at once (default 10: half the
	// api's default pool), ConnectQueue how many more may wait for a slot (default 10,000);
	// a connect beyond both is refused with Unavailable (see admission).
	ConnectSlots, ConnectQueue int
}

// The admission bounds of a Config that sets none.
const (
	DefaultConnectSlots = 10
	DefaultConnectQueue = 10000
)

// Gateway serves agent streams.
type Gateway struct {
	agentv1.UnimplementedAgentServiceServer

	cfg    Config
	store  *store.Store
	signer *Signer
	log    *slog.Logger
	sink   ResultSink

	metrics *metrics.Gateway // nil: nothing recorded
	syncm   syncMetrics

	// replica identifies this process's lease; started is when the gateway was made.
	replica   uuid.UUID
	started   time.Time
	leaseHeld bool             // the lease was written once (only the lease loop touches it)
	lease     *store.LeaseConn // the lease's own connection (renewLease)

	admit      *admission   // bounds the connects doing database work at once
	claims     *claimGroups // commits the claims of concurrent JWT connects together
	sessions   *registry
	writers    *writerPool
	guard      *authGuard
	tokens     *tokenStates
	presence   *presence
	deliveries deliveryShards
	marks      *passedMarks
	// controlSeq counts the agent-control notifications (revoke, delete, rotate) handled; a
	// JWT connect that saw it move between its claim and its registration checks again
	// (acceptJWT).
	controlSeq atomic.Uint64
	// commandSeq counts the command notifications and the LISTEN connection's ups and downs,
	// and listening is whether it is up: a JWT connect reads its pending commands before its
	// session is registered, and trusts that read only if neither moved meanwhile (a command
	// notified meanwhile may have found no session to go to).
	commandSeq atomic.Uint64
	listening  atomic.Bool
	// notifiedLookedUp counts the notified commands deliverNotified has looked the streams of up
	// (for tests).
	notifiedLookedUp atomic.Uint64
	// claimedHook, in tests, runs between a JWT connect's claim and its registration.
	claimedHook func(agentID uuid.UUID)
	// notifiedReadHook, in tests, runs before each read of notified commands; an error it
	// returns is that read's.
	notifiedReadHook atomic.Pointer[func() error]
	// authTimeout is how long a new stream may take to send its ConnectRequest (authTimeout;
	// tests shorten it).
	authTimeout time.Duration
	// notifiedIDs carries the ids of enqueued commands from the LISTEN connection to
	// deliverNotified.
	notifiedIDs chan uuid.UUID

	// listenReady is closed once the first LISTEN is established (tests wait on it).
	listenReady     chan struct{}
	listenReadyOnce sync.Once
}

// Option configures a Gateway.
type Option func(*Gateway)

// WithResultSink passes acknowledged results to s.
func WithResultSink(s ResultSink) Option { return func(g *Gateway) { g.sink = s } }

// WithMetrics registers the gateway's series in reg, labelled with this replica's name.
func WithMetrics(reg prometheus.Registerer, replica string) Option {
	return func(g *Gateway) {
		g.metrics = metrics.NewGateway(reg, replica, g.sessionStats)
	}
}

// sessionStats is, per cluster, how many agents hold a stream here and the oldest last message
// among them (read at scrape time).
func (g *Gateway) sessionStats() []metrics.SessionStats {
	byCluster := map[string]*metrics.SessionStats{}
	now := time.Now()
	for _, s := range g.sessions.all() {
		st := byCluster[s.clusterName]
		if st == nil {
			st = &metrics.SessionStats{Cluster: s.clusterName}
			byCluster[s.clusterName] = st
		}
		st.Connected++
		st.OldestHeartbeat = max(st.OldestHeartbeat, now.Sub(s.lastSeen()))
	}
	out := make([]metrics.SessionStats, 0, len(byCluster))
	for _, st := range byCluster {
		out = append(out, *st)
	}
	return out
}

// WithSyncMetrics exports the sync state of the clusters it checks, and the repairs it sends.
func WithSyncMetrics(m *metrics.Sync) Option { return func(g *Gateway) { g.syncm = syncMetrics{m} } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(g *Gateway) { g.log = l } }

// New returns a gateway; call Run to start its background loops.
func New(cfg Config, st *store.Store, signer *Signer, opts ...Option) *Gateway {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.MissedHeartbeats <= 0 {
		cfg.MissedHeartbeats = 3
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 2 * time.Second
	}
	if cfg.DriftCheckInterval <= 0 {
		cfg.DriftCheckInterval = cfg.HeartbeatInterval
	}
	if cfg.DriftGrace <= 0 {
		cfg.DriftGrace = 2*cfg.HeartbeatInterval + cfg.FlushInterval
	}
	if cfg.RepairEvery <= 0 {
		cfg.RepairEvery = time.Minute
	}
	if cfg.MaxRepairs <= 0 {
		cfg.MaxRepairs = 3
	}
	if cfg.ConnectSlots <= 0 {
		cfg.ConnectSlots = DefaultConnectSlots
	}
	if cfg.ConnectQueue <= 0 {
		cfg.ConnectQueue = DefaultConnectQueue
	}
	g := &Gateway{cfg: cfg, store: st, signer: signer, log: slog.Default(), sessions: newRegistry(), writers: newWriterPool(), guard: newAuthGuard(), tokens: newTokenStates(tokenStateTTL), listenReady: make(chan struct{}), authTimeout: authTimeout, admit: newAdmission(cfg.ConnectSlots, cfg.ConnectQueue),
		notifiedIDs: make(chan uuid.UUID, 4*notifiedBatch), replica: uuid.New(), started: time.Now().UTC(), lease: st.LeaseConn()}
	for _, o := range opts {
		o(g)
	}
	g.claims = newClaimGroups(st.ClaimAgentsByTokenAndRead, claimRunnersOf(cfg.ConnectSlots), cfg.ConnectSlots, g.metrics.ClaimGroup)
	g.presence = newPresence(g)
	g.deliveries = newDeliveryShards(g, deliveryWriters)
	g.marks = newPassedMarks(g)
	return g
}

// Signer returns the JWT signer (the REST middleware shares it).
func (g *Gateway) Signer() *Signer { return g.signer }

// ListenReady is closed once the gateway listens for commands.
func (g *Gateway) ListenReady() <-chan struct{} { return g.listenReady }

// ConnectedHere reports whether this replica holds a stream of the agent.
func (g *Gateway) ConnectedHere(agentID uuid.UUID) bool { return g.sessions.get(agentID) != nil }

// ReplicaID is the id of this replica's lease (agents.replica_id of the agents it holds).
func (g *Gateway) ReplicaID() uuid.UUID { return g.replica }

// SessionCount is the number of streams this replica holds.
func (g *Gateway) SessionCount() int { return g.sessions.count() }

// Run runs the background loops until ctx ends: the LISTEN connection and the delivery of the
// commands it is told about, the lease, the presence flusher and watchdog, the crash sweeper,
// the delivery writer and the result sweeper. When ctx ends, every stream is told
// Close{SHUTDOWN} and ended, and the lease is released.
func (g *Gateway) Run(ctx context.Context) {
	g.renewLease(ctx)
	var wg sync.WaitGroup
	loops := []func(context.Context){g.listen, g.deliverNotified, g.leaseLoop, g.presence.run, g.watchdog, g.sweepStaleAgents, g.sweepUnpassedResults, g.driftLoop}
	for _, l := range loops {
		wg.Add(1)
		go func() { defer wg.Done(); l(ctx) }()
	}
	// The delivery writer outlives the other loops by one flush so nothing acknowledged is lost.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	wdone := make(chan struct{})
	go func() { g.deliveries.run(wctx); close(wdone) }()
	mdone := make(chan struct{})
	go func() { g.marks.run(wctx); close(mdone) }()
	<-ctx.Done()
	for _, s := range g.sessions.all() {
		s.close(agentv1.CloseReason_CLOSE_REASON_SHUTDOWN, "server shutting down")
	}
	wg.Wait()
	g.deliveries.stop()
	<-wdone // its last batch is written with a live context, then it is cancelled
	wcancel()
	<-mdone
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	g.marks.flush(fctx) // what is left unmarked the sweeper of a replica passes on again
	fcancel()
	g.presence.flush(context.WithoutCancel(ctx))
	g.releaseLease(context.WithoutCancel(ctx))
}

// sweepUnpassedResults passes on results that were stored but not passed on (a crash between
// the two, or a sink that failed).
func (g *Gateway) sweepUnpassedResults(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, err := g.store.UnpassedResults(ctx, 2*time.Second, 200)
		if err != nil {
			continue
		}
		g.passOn(ctx, rows)
	}
}

// passOnWorkers bounds how many results are passed on at once. Each is a round trip to
// Temporal (a signal); a credential rollout's acks from 100 clusters are 100 of them.
const passOnWorkers = 16

// toPassOn returns the results of acked records to pass on, and sets PassedOn on the records
// whose result has nobody to go to: no sink, or one that says passing it would do nothing.
func (g *Gateway) toPassOn(acked []store.DeliveryRecord) []store.UnpassedResult {
	settler, _ := g.sink.(resultSettler)
	results := make([]store.UnpassedResult, 0, len(acked))
	for i := range acked {
		r := &acked[i]
		if r.Kind == "" {
			continue
		}
		u := store.UnpassedResult{CommandID: r.CommandID, ClusterID: r.ClusterID, AgentID: r.AgentID, Kind: r.Kind, Payload: r.Payload,
			ResultStatus: r.ResultStatus, Result: r.Result, AckedAt: r.At}
		if g.sink == nil || settler != nil && settler.Settled(u) {
			r.PassedOn = true
			continue
		}
		results = append(results, u)
	}
	return results
}

// passOn passes results to the sink and records, in one statement, which ones it took (all of
// them when there is no sink). A result the sink refused stays for the sweeper. Results of
// different commands go concurrently; those of one command (several agents answering the
// same deploy) in the order they came, since the first one decides a publish.
func (g *Gateway) passOn(ctx context.Context, rs []store.UnpassedResult) {
	passed := make([]bool, len(rs))
	if g.sink == nil {
		for i := range passed {
			passed[i] = true
		}
	} else {
		if rec, ok := g.sink.(resultRecorder); ok && len(rs) > 1 {
			if err := rec.RecordResults(ctx, rs); err == nil {
				for i := range rs {
					rs[i].Recorded = true
				}
			}
		}
		var order []uuid.UUID
		byCommand := map[uuid.UUID][]int{}
		for i, r := range rs {
			if _, ok := byCommand[r.CommandID]; !ok {
				order = append(order, r.CommandID)
			}
			byCommand[r.CommandID] = append(byCommand[r.CommandID], i)
		}
		sem := make(chan struct{}, passOnWorkers)
		var wg sync.WaitGroup
		for _, c := range order {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				for _, i := range byCommand[c] {
					r := rs[i]
					sctx, span := resultSpan(ctx, r)
					err := g.sink.PassOn(sctx, r)
					if err != nil {
						span.RecordError(err)
					}
					span.End()
					if err != nil {
						g.log.Warn("passing a result on failed; the sweeper retries", "command_id", r.CommandID, "agent_id", r.AgentID, "err", err)
						continue
					}
					passed[i] = true
				}
			})
		}
		wg.Wait()
	}
	done := make([]store.UnpassedResult, 0, len(rs))
	for i, r := range rs {
		if passed[i] {
			done = append(done, r)
		}
	}
	g.marks.add(done)
}

// passedMarkDelay is how long the passed-on marks of results wait for others to share their
// statement. The mark only keeps the sweeper from passing a result on again, which it does
// for results unmarked after 2 s, so a delay far below that changes nothing else.
const passedMarkDelay = 50 * time.Millisecond

// passedMarks writes the passed-on marks of results in batches. Each batch of delivery rows
// marked its own results in a statement of its own: with a broadcast's acks arriving in small
// batches on every replica, those were a third of its transactions (one upsert, one read of
// the commands, one mark a batch), competing with the upserts the broadcast waits for.
type passedMarks struct {
	g       *Gateway
	mu      sync.Mutex
	pending []store.UnpassedResult
	kick    chan struct{}
	flushMu sync.Mutex // one statement at a time: two marking the same rows could deadlock
}

func newPassedMarks(g *Gateway) *passedMarks {
	return &passedMarks{g: g, kick: make(chan struct{}, 1)}
}

func (m *passedMarks) add(rs []store.UnpassedResult) {
	if len(rs) == 0 {
		return
	}
	m.mu.Lock()
	m.pending = append(m.pending, rs...)
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run writes what was added passedMarkDelay after it was, until ctx ends; Run then flushes
// the rest once the delivery writers are done.
func (m *passedMarks) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		t := time.NewTimer(passedMarkDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		m.flush(ctx)
	}
}

// flush marks everything added so far, deliveryBatch rows a statement. A mark that fails is
// left to the sweeper, which passes the result on again (sinks tolerate a repeat).
func (m *passedMarks) flush(ctx context.Context) {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	rs := m.pending
	m.pending = nil
	m.mu.Unlock()
	for len(rs) > 0 {
		n := min(len(rs), deliveryBatch)
		if err := m.g.store.MarkResultsPassedOn(ctx, rs[:n]); err != nil && ctx.Err() == nil {
			m.g.log.Warn("mark results passed on; the sweeper passes them again", "results", n, "err", err)
		}
		rs = rs[n:]
	}
}

// VerifyAgentToken checks an agent JWT for the REST API: a valid signature and expiry, and the
// agent's row as tokenStateErr wants it, with the row's fields served from memory for a few
// seconds (tokenStates): every agent of a cluster fetches every publish's snapshot. A stream
// checks the same in the statement that claims the agent (acceptJWT).
func (g *Gateway) VerifyAgentToken(ctx context.Context, raw string) (agentID, clusterID uuid.UUID, err error) {
	vt, err := g.signer.Verify(raw)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	st, err := g.cachedTokenState(ctx, vt.AgentID)
	if err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("agent %s: %w", vt.AgentID, err)
	}
	if err := tokenStateErr(vt, st); err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	return vt.AgentID, vt.ClusterID, nil
}

// tokenStateErr says why a verified agent JWT no longer stands for the agent whose row is st:
// the agent is revoked (errRevoked), or its token generation or cluster is not the token's
// (ClaimAgentByTokenAndRead claims a row only under the same conditions). nil: it stands.
func tokenStateErr(vt VerifiedToken, st store.AgentTokenState) error {
	if st.Status == models.AgentRevoked {
		return errRevoked
	}
	if st.TokenGeneration != vt.Generation || st.ClusterID != vt.ClusterID {
		return errors.New("agent jwt of a retired generation")
	}
	return nil
}

// cachedTokenState is the store's AgentToken through tokenStates.
func (g *Gateway) cachedTokenState(ctx context.Context, id uuid.UUID) (store.AgentTokenState, error) {
	st, ok, gen := g.tokens.get(id)
	if ok {
		return st, nil
	}
	st, err := g.store.AgentToken(ctx, id)
	if err == nil {
		g.tokens.put(id, gen, st)
	}
	return st, err
}
