package agentgw

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
)

// The replica's lease: one row, renewed every flush interval, says "this replica is alive as
// of T" and so vouches for every agent whose stream it holds (the watchdog ends the streams of
// agents that miss heartbeats, which writes their rows). That is the whole cost of an idle
// fleet in Postgres: one row per replica per interval, whatever the number of agents. A
// heartbeat reaches an agent's row only when its applied set or credential checksum changed.
//
// Other replicas judge a connected agent by its replica's lease (sweepStaleAgents): when the
// lease is older than the stale limit the replica is taken for dead and its agents are marked
// disconnected. A replica that was only slow (a long pause, Postgres unreachable) finds out
// from its next renewal and, like every reconcileEvery anyway, checks which of its streams
// still hold their agents' rows: a stream whose agent another stream claimed is closed as
// superseded, one whose agent was marked disconnected is ended so the agent reconnects.

// staleAfter is how old a replica's lease (or, for an agent no lease vouches for, its row's
// heartbeat) may get before its agents are taken for disconnected: the missed-heartbeat limit
// plus three flushes, as long as a replica's watchdog takes plus the delays of its writes.
func (g *Gateway) staleAfter() time.Duration {
	return time.Duration(g.cfg.MissedHeartbeats)*g.cfg.HeartbeatInterval + 3*g.cfg.FlushInterval
}

// reconcileEvery is how often the replica checks that its streams still hold their agents'
// rows: two thirds of the missed-heartbeat limit, how long a superseded stream could stay
// open before leases (it was found out by the next heartbeat written).
func (g *Gateway) reconcileEvery() time.Duration {
	d := time.Duration(g.cfg.MissedHeartbeats) * g.cfg.HeartbeatInterval * 2 / 3
	return max(d, g.cfg.FlushInterval)
}

// leaseLoop renews the lease every flush interval and reconciles the streams every
// reconcileEvery, or at once after a renewal that found the lease lapsed. A reconcile runs
// beside the renewals (one at a time): it reads every stream's row, which under load can take
// longer than the stale limit, and a renewal waiting for it would let the lease lapse.
func (g *Gateway) leaseLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.FlushInterval)
	defer t.Stop()
	var reconciling sync.WaitGroup
	defer reconciling.Wait()
	var running atomic.Bool
	lastReconcile, lapsed := time.Now(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A lapse seen while a reconcile runs (it may have read the rows before the sweep)
		// starts another once that one is done.
		lapsed = g.renewLease(ctx) || lapsed
		if (lapsed || time.Since(lastReconcile) >= g.reconcileEvery()) && running.CompareAndSwap(false, true) {
			lastReconcile, lapsed = time.Now(), false
			reconciling.Go(func() {
				defer running.Store(false)
				g.reconcileSessions(ctx)
			})
		}
	}
}

// renewLease writes the lease once, on the lease's own connection; lapsed says other replicas
// may have taken this one for dead (the lease was gone or older than the stale limit before
// this renewal).
func (g *Gateway) renewLease(ctx context.Context) (lapsed bool) {
	now := time.Now().UTC()
	prev, err := g.lease.Renew(ctx, store.GatewayLease{ReplicaID: g.replica, Name: g.cfg.ReplicaName, StartedAt: g.started, AliveAt: now})
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("lease renewal failed; retrying next tick", "replica_id", g.replica, "err", err)
		}
		return false
	}
	first := !g.leaseHeld
	g.leaseHeld = true
	if !first && (prev.IsZero() || now.Sub(prev) > g.staleAfter()) {
		g.log.Warn("this replica's lease had lapsed; other replicas may have marked its agents disconnected", "replica_id", g.replica, "alive_at", prev)
		return true
	}
	return false
}

// reconcileSessions ends the streams whose agent rows they no longer hold.
func (g *Gateway) reconcileSessions(ctx context.Context) {
	all := g.sessions.all()
	held := make([]store.HeldSession, 0, len(all))
	byAgent := make(map[uuid.UUID]*session, len(all))
	for _, s := range all {
		if !s.claimed.Load() {
			continue // its claim is being written; checking it now would find the previous stream's
		}
		held = append(held, store.HeldSession{AgentID: s.agentID, SessionID: s.id})
		byAgent[s.agentID] = s
	}
	lost, err := g.store.LostSessions(ctx, held)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("stream reconcile failed; retrying later", "streams", len(held), "err", err)
		}
		return
	}
	for _, l := range lost {
		s := byAgent[l.AgentID]
		if s == nil {
			continue
		}
		if l.Superseded {
			s.close(agentv1.CloseReason_CLOSE_REASON_SUPERSEDED, "another stream of this agent is current")
			continue
		}
		g.log.Info("agent no longer connected in Postgres; ending its stream so it reconnects", "agent_id", s.agentID, "cluster_id", s.clusterID)
		s.end(errors.New("marked disconnected while this replica's lease had lapsed"))
	}
}

// releaseLease removes the lease when the replica stops, once its streams have ended (each
// end releases its agent's row) or after a bound: what is left is the sweepers'.
func (g *Gateway) releaseLease(ctx context.Context) {
	deadline := time.Now().Add(5 * time.Second)
	for g.sessions.count() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.store.ReleaseLease(ctx, g.replica); err != nil {
		g.log.Warn("release lease", "replica_id", g.replica, "err", err)
	}
	_ = g.lease.Close()
}

// sweepStaleAgents marks agents disconnected whose replica died without saying so: no live
// replica vouches for them (their replica's lease is older than staleAfter, or gone).
func (g *Gateway) sweepStaleAgents(ctx context.Context) {
	t := time.NewTicker(max(g.cfg.HeartbeatInterval, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, err := g.store.MarkStaleAgentsDisconnected(ctx, g.replica, time.Now().Add(-g.staleAfter()),
			"no live api replica holds its stream (its replica's lease expired)")
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("stale agent sweep failed", "err", err)
			}
			continue
		}
		clusters := map[uuid.UUID]bool{}
		for _, r := range rows {
			clusters[r.ClusterID] = true
		}
		for c := range clusters {
			_ = g.store.RefreshClusterStatus(ctx, c)
		}
	}
}
