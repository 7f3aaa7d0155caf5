package store

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/imprun/imprun-server/models"
)

// Liveness of connected agents: every agent gateway replica holds a lease row it renews each
// flush interval ("alive as of alive_at"), and an agent row names the replica holding its
// stream. The replica's watchdog ends the stream of an agent that misses heartbeats, so a
// fresh lease vouches for every agent it holds; an idle agent's row is never written.

// agentSeen is an agent's last_heartbeat_at as it is shown: for a connected agent the later of
// its row's own (written at connect, disconnect and when its reports change) and the last
// renewal of its replica's lease; otherwise the row's own. It reads agents as a and their
// lease as l (LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id).
const agentSeen = `CASE WHEN a.status = 'connected' THEN GREATEST(a.last_heartbeat_at, l.alive_at) ELSE a.last_heartbeat_at END`

// agentsShown is the query of the agents table as every read that shows agents sees it: each column of
// models.Agent, with last_heartbeat_at as agentSeen. The column list comes from the model, so a
// column added to both is read without touching this.
var agentsShown = sync.OnceValue(func() string {
	sch, err := schema.Parse(&models.Agent{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		panic("store: models.Agent: " + err.Error())
	}
	cols := make([]string, 0, len(sch.DBNames))
	for _, c := range sch.DBNames {
		if c == "last_heartbeat_at" {
			cols = append(cols, agentSeen+" AS last_heartbeat_at")
			continue
		}
		cols = append(cols, "a."+c)
	}
	return `SELECT ` + strings.Join(cols, ", ") + ` FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id`
})

// shownAgents is a query on agentsShown, named agents (so GORM's own conditions, such as the
// primary key of a struct read into, name it right).
func shownAgents(db *gorm.DB) *gorm.DB { return db.Table("(?) AS agents", gorm.Expr(agentsShown())) }

// GatewayLease is one replica's lease.
type GatewayLease struct {
	ReplicaID uuid.UUID
	// Name labels the replica for people (its host name); several processes may share one.
	Name      string
	StartedAt time.Time
	AliveAt   time.Time
}

// RenewLease writes the replica's lease, alive as of l.AliveAt, in one statement (it is
// created on the first renewal and again if a sweeper removed it). It returns the alive_at the
// lease held before, zero when there was none: a replica that finds it older than the stale
// limit knows other replicas may have taken its agents for dead. A replica renews through a
// LeaseConn; this runs the same statement on the pool.
func (s *Store) RenewLease(ctx context.Context, l GatewayLease) (previous time.Time, err error) {
	var prev *time.Time
	err = s.readRow(ctx, leaseRenew, leaseArgs(l), &prev)
	if err != nil || prev == nil {
		return time.Time{}, err
	}
	return *prev, nil
}

const leaseRenew = `WITH prev AS (SELECT alive_at FROM gateway_leases WHERE replica_id = $1)
	INSERT INTO gateway_leases AS g (replica_id, name, started_at, alive_at) VALUES ($1, $2, $3, $4)
	ON CONFLICT (replica_id) DO UPDATE SET alive_at = GREATEST(g.alive_at, EXCLUDED.alive_at)
	RETURNING (SELECT alive_at FROM prev) AS prev`

func leaseArgs(l GatewayLease) []any {
	return []any{l.ReplicaID, models.Cut(l.Name, 255), l.StartedAt, l.AliveAt}
}

// LeaseConn renews a replica's lease on a connection of its own, taken from the pool once and
// kept: a renewal never waits behind the pool's other work. When a connect storm or a flood of
// acknowledgements keeps every pooled connection busy and a queue of statements waiting, a
// renewal in that queue can wait past the stale limit; the other replicas then take this one
// for dead, mark its agents disconnected, and its streams are ended so that they reconnect:
// a second storm on top of the first (76,000 agents on four replicas never settled). The pool
// has one connection fewer for the rest while the replica runs.
type LeaseConn struct {
	s    *Store
	mu   sync.Mutex
	conn *sql.Conn
}

// LeaseConn returns a LeaseConn; its connection is taken at the first renewal.
func (s *Store) LeaseConn() *LeaseConn { return &LeaseConn{s: s} }

// Renew is RenewLease on the kept connection. A failed statement gives the connection back
// (database/sql drops it if it broke) and the next renewal takes another.
func (c *LeaseConn) Renew(ctx context.Context, l GatewayLease) (previous time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		sqlDB, err := c.s.pool.DB()
		if err != nil {
			return time.Time{}, err
		}
		if c.conn, err = sqlDB.Conn(ctx); err != nil {
			return time.Time{}, err
		}
	}
	c.s.observed(leaseRenew)
	var prev sql.NullTime
	if err := c.conn.QueryRowContext(ctx, leaseRenew, leaseArgs(l)...).Scan(&prev); err != nil {
		_ = c.conn.Close()
		c.conn = nil
		return time.Time{}, err
	}
	if !prev.Valid {
		return time.Time{}, nil
	}
	return prev.Time, nil
}

// Close gives the connection back to the pool.
func (c *LeaseConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// ReleaseLease removes a replica's lease when it stops (its agents were released by their
// streams' ends; any still connected are the sweepers' at once).
func (s *Store) ReleaseLease(ctx context.Context, replicaID uuid.UUID) error {
	return s.db(ctx).Exec(`DELETE FROM gateway_leases WHERE replica_id = ?`, replicaID).Error
}

// MarkStaleAgentsDisconnected marks disconnected every connected agent that no live replica
// vouches for: its shown heartbeat (agentSeen; the lease of the replica holding it, or its
// row's own when that replica has no lease, or the agent is of a replica from before leases)
// is older than seenBefore. Agents of the replica self are left to its own watchdog. The
// last_heartbeat_at written is the last time the agent was vouched for. Leases that expired and
// hold no connected agent any more are removed in the same statement. Each agent marked
// gets its "disconnected" event, with message, in the same statement as its status, so a
// crash can't keep one without the other. It returns the agents it marked.
//
// An agent claimed meanwhile by a new stream (session_id changed) is not touched: the row is
// matched on the session it had when it was judged.
func (s *Store) MarkStaleAgentsDisconnected(ctx context.Context, self uuid.UUID, seenBefore time.Time, message string) ([]AgentRef, error) {
	// The candidates are the agents of the replicas (other than self) whose lease is stale or
	// gone, and the connected rows that name no replica: an agent of a live lease is seen as of
	// that lease, so it is never stale. The replicas holding agents are found by walking
	// agents_replica_idx from one value to the next (one lookup per replica), so an idle fleet
	// is not read at all (every replica read every other's agents each interval: 23.7 ms a sweep
	// of 20,000 agents, 0.8-0.9 ms now; BenchmarkStaleSweep). One statement, one round trip: the
	// expired leases removed are those holding no agent but the ones it marks.
	//
	// A row another transaction holds is skipped (SKIP LOCKED), not waited for: it is being
	// claimed by a connect (the claims of a storm's connects are committed together, several
	// rows a transaction, and a sweep locking the same rows in another order deadlocked with
	// them) or released by a disconnect; if it is still stale once that commits, the next sweep
	// marks it.
	var rows []AgentRef
	err := s.readRows(ctx, `WITH RECURSIVE holders AS (
			(SELECT replica_id FROM agents WHERE replica_id IS NOT NULL ORDER BY replica_id LIMIT 1)
			UNION ALL
			SELECT (SELECT a.replica_id FROM agents a WHERE a.replica_id > h.replica_id ORDER BY a.replica_id LIMIT 1)
			FROM holders h WHERE h.replica_id IS NOT NULL
		), suspects AS (
			SELECT h.replica_id FROM holders h LEFT JOIN gateway_leases l ON l.replica_id = h.replica_id
			WHERE h.replica_id IS NOT NULL AND h.replica_id <> $1 AND (l.alive_at IS NULL OR l.alive_at < $2)
		), held AS (
			SELECT a.id, a.session_id, `+agentSeen+` AS seen
			FROM suspects s JOIN agents a ON a.replica_id = s.replica_id LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id
			WHERE a.status = 'connected'
			FOR UPDATE OF a SKIP LOCKED
		), unheld AS (
			SELECT a.id, a.session_id, a.last_heartbeat_at AS seen FROM agents a WHERE a.status = 'connected' AND a.replica_id IS NULL
			FOR UPDATE OF a SKIP LOCKED
		), marked AS (
			UPDATE agents t SET status = 'disconnected', session_id = NULL, replica_id = NULL, last_heartbeat_at = v.seen, updated_at = now()
			FROM (SELECT * FROM held UNION ALL SELECT * FROM unheld) v
			WHERE t.id = v.id AND t.status = 'connected' AND t.session_id IS NOT DISTINCT FROM v.session_id
			  AND coalesce(v.seen, '-infinity') < $2
			RETURNING t.id, t.cluster_id
		), events AS (
			INSERT INTO agent_events (agent_id, cluster_id, type, message)
			SELECT id, cluster_id, $3, $4 FROM marked
		), gone AS (
			DELETE FROM gateway_leases l WHERE l.alive_at < $2 AND l.replica_id <> $1
			  AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.replica_id = l.replica_id AND a.id NOT IN (SELECT id FROM marked))
		)
		SELECT id, cluster_id FROM marked`, []any{self, seenBefore, models.EventDisconnected, models.Cut(message, 1000)},
		func(rs rowScanner) error {
			var r AgentRef
			if err := rs.Scan(&r.ID, &r.ClusterID); err != nil {
				return err
			}
			rows = append(rows, r)
			return nil
		})
	return rows, err
}

// HeldSession is a stream a replica holds: the agent and the session that claimed its row.
type HeldSession struct {
	AgentID, SessionID uuid.UUID
}

// LostSession is a held stream whose agent row the session no longer holds: Superseded when a
// newer stream claimed it (on another replica, or another process of the same agent), else
// the agent is no longer connected (a sweeper took the replica for dead) or is gone.
type LostSession struct {
	AgentID    uuid.UUID
	Superseded bool
}

// LostSessions returns the streams of held whose agent row the session no longer holds. It only
// reads.
func (s *Store) LostSessions(ctx context.Context, held []HeldSession) ([]LostSession, error) {
	if len(held) == 0 {
		return nil, nil
	}
	// Every reconcileEvery with every stream of the replica: past GORM, the ids go as binary
	// uuid arrays (as text array literals they were parsed back, a tenth of a second of CPU
	// for 10,000 streams).
	ids := make([]uuid.UUID, len(held))
	sids := make([]uuid.UUID, len(held))
	for i, h := range held {
		ids[i], sids[i] = h.AgentID, h.SessionID
	}
	var lost []LostSession
	err := s.readRows(ctx, `SELECT v.id, coalesce(a.session_id IS NOT NULL AND a.session_id <> v.sid, false)
		FROM unnest($1::uuid[], $2::uuid[]) AS v(id, sid) LEFT JOIN agents a ON a.id = v.id
		WHERE a.id IS NULL OR a.session_id IS DISTINCT FROM v.sid OR a.status <> 'connected'`,
		[]any{ids, sids}, func(rs rowScanner) error {
			var l LostSession
			if err := rs.Scan(&l.AgentID, &l.Superseded); err != nil {
				return err
			}
			lost = append(lost, l)
			return nil
		})
	return lost, err
}
