package agentgw

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/digest"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/syncstate"
)

// SyncLimits are the limits the gateway judges desired vs applied with; the REST API shows the
// same states with the same limits.
func (g *Gateway) SyncLimits() syncstate.Limits {
	return syncstate.Limits{
		Grace: g.cfg.DriftGrace,
		// A connected agent's shown heartbeat is its replica's lease, at most a flush old while
		// the replica lives; a silent agent is ended by the watchdog within the missed-heartbeat
		// limit (and the time its replica was stalled), and a dead replica's lease ages past
		// this before sweepers take its agents.
		StaleAfter: time.Duration(g.cfg.MissedHeartbeats)*g.cfg.HeartbeatInterval + 2*g.cfg.FlushInterval,
		MaxRepairs: g.cfg.MaxRepairs,
	}
}

// appliedDigest is Heartbeat.applied_digest of an applied set (package digest defines it for
// both sides).
func appliedDigest(rs []models.AppliedRevision) string {
	as := make([]digest.Applied, len(rs))
	for i, r := range rs {
		as[i] = digest.Applied{PublishID: r.PublishID, Revision: int64(r.Revision), Checksum: r.Checksum, Drift: r.Drift}
	}
	return digest.AppliedSet(as)
}

func toApplied(rs []*agentv1.AppliedRevision) []models.AppliedRevision {
	out := make([]models.AppliedRevision, 0, len(rs))
	for _, r := range rs {
		out = append(out, models.AppliedRevision{PublishID: models.Cut(r.GetPublishId(), 64), Revision: int(r.GetRevision()),
			Checksum: models.Cut(r.GetChecksum(), 64), Drift: models.Cut(r.GetDrift(), 300)})
	}
	return out
}

// driftLoop compares, every DriftCheckInterval (or less often, see driftShare), what the agents
// connected here serve with what their clusters should serve, and repairs what drifted (policy
// repair).
func (g *Gateway) driftLoop(ctx context.Context) {
	t := time.NewTimer(g.cfg.DriftCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.awaitDeliveriesIdle(ctx, g.cfg.DriftCheckInterval)
		start := time.Now()
		g.checkDrift(ctx)
		t.Reset(driftPause(g.cfg.DriftCheckInterval, time.Since(start)))
	}
}

// driftShare bounds the share of time the drift check takes: a pass that took d waits at least
// driftShare times d before the next one. Each pass loads and computes the agents this replica
// holds of every cluster it holds agents of; for a share of tens of thousands of agents that is
// seconds, and checking it every heartbeat interval would take the replica's CPU from its
// streams (a connect storm then crawls). A large share's drift is found later instead.
const driftShare = 10

// driftPause is the wait before the next drift check after one that took took.
func driftPause(interval, took time.Duration) time.Duration {
	return max(interval, driftShare*took)
}

// awaitDeliveriesIdle waits until the delivery writers hold nothing, or most has passed: a drift
// check is background work, and one that starts while a command fans out (a credential change
// to every agent) takes CPU and Postgres from the acknowledgements being stored. The check is
// late by as long as a broadcast takes, and by one interval at most under constant traffic.
func (g *Gateway) awaitDeliveriesIdle(ctx context.Context, most time.Duration) {
	deadline := time.Now().Add(most)
	t := time.NewTicker(driftIdlePoll)
	defer t.Stop()
	for g.deliveries.busy() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// driftIdlePoll is how often awaitDeliveriesIdle looks again.
const driftIdlePoll = 100 * time.Millisecond

// checkDrift checks, once, the agents this replica holds, cluster by cluster. Each replica
// reads only its own share (every replica reading whole clusters read each agent once per
// replica), and the replica whose live lease started first also reads the agents no live
// replica holds (disconnected, or held by a dead replica), with the clusters that have any:
// every agent is counted in the sync series by exactly one replica, and a cluster whose agents
// are all gone still shows them, stale.
func (g *Gateway) checkDrift(ctx context.Context) {
	clusters := map[uuid.UUID][]*session{}
	for _, s := range g.sessions.all() {
		clusters[s.clusterID] = append(clusters[s.clusterID], s)
	}
	liveSince := time.Now().Add(-g.staleAfter())
	reporter := false
	if id, ok, err := g.store.OldestLiveReplica(ctx, liveSince); err == nil && ok && id == g.replica {
		reporter = true
		ids, err := g.store.ClustersWithUnheldAgents(ctx, liveSince)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("sync state: clusters with unheld agents", "err", err)
			}
			reporter = false
		}
		for _, id := range ids {
			if _, ok := clusters[id]; !ok {
				clusters[id] = nil
			}
		}
	}
	counted := map[string]bool{}
	for cid, ss := range clusters {
		if ctx.Err() != nil {
			return
		}
		if g.checkCluster(ctx, cid, ss, reporter, liveSince) {
			counted[cid.String()] = true
		}
	}
	g.syncm.retain(counted)
}

// checkCluster computes the sync state of the cluster's agents in this replica's share and
// repairs the drifted ones among ss. It says whether the share's counts are in the series (a
// failed read keeps the counts of the pass before).
func (g *Gateway) checkCluster(ctx context.Context, clusterID uuid.UUID, ss []*session, unheld bool, liveSince time.Time) bool {
	in, err := g.store.HeldSyncInputs(ctx, clusterID, g.replica, unheld, liveSince)
	if errors.Is(err, store.ErrNotFound) {
		return false // deleted meanwhile
	}
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("sync state: load cluster", "cluster_id", clusterID, "err", err)
		}
		return true
	}
	if len(in.Agents) == 0 {
		return false
	}
	cs := syncstate.Compute(in, time.Now().UTC(), g.SyncLimits())
	g.syncm.setSync(cs)
	byAgent := cs.ByAgent()
	for _, s := range ss {
		a, ok := byAgent[s.agentID]
		if !ok {
			continue
		}
		g.logIgnored(s, *a)
		g.repair(ctx, s, cs, *a, false)
	}
	return true
}

// logIgnored logs, once per distinct report, applied revisions the agent reports that its
// cluster does not run: they are ignored.
func (g *Gateway) logIgnored(s *session, a syncstate.AgentSync) {
	if len(a.Ignored) == 0 {
		return
	}
	sig := appliedDigest(a.Ignored)
	s.mu.Lock()
	seen := s.ignoredSig == sig
	s.ignoredSig = sig
	s.mu.Unlock()
	if !seen {
		g.log.Warn("agent reports applied revisions its cluster does not run; ignored", "agent_id", s.agentID, "cluster_id", s.clusterID,
			"entries", len(a.Ignored), "first_publish_id", a.Ignored[0].PublishID, "first_revision", a.Ignored[0].Revision)
	}
}

// repair sends agent a what drifted, at most once per RepairEvery per agent (connect is the
// exception: an agent that comes back with an empty state directory gets everything at once).
// It reports whether it tried to enqueue a repair.
func (g *Gateway) repair(ctx context.Context, s *session, cs syncstate.ClusterSync, a syncstate.AgentSync, onConnect bool) bool {
	plan := syncstate.PlanFor(cs, a)
	if plan.Empty() {
		return false
	}
	now := time.Now().UTC()
	s.mu.Lock()
	if !onConnect && now.Sub(s.lastRepair) < g.cfg.RepairEvery {
		s.mu.Unlock()
		return false
	}
	s.lastRepair = now
	s.mu.Unlock()
	created, err := syncstate.Repairer{Store: g.store, Every: g.cfg.RepairEvery}.Repair(ctx, cs.ClusterID, a, plan, now)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("drift repair failed; the next check tries again", "agent_id", s.agentID, "err", err)
		}
		return true
	}
	if created {
		g.syncm.repaired(len(plan.Publishes), plan.Credentials)
		g.log.Info("drift repair sent", "agent_id", s.agentID, "cluster_id", s.clusterID, "publishes", len(plan.Publishes), "credentials", plan.Credentials,
			"on_connect", onConnect)
	}
	return true
}

// repairOnConnect runs before the agent's pending commands are sent: an agent whose state is
// missing publishes or credentials (a wiped state directory) gets the cluster's whole desired
// set first (repairs sort before ordinary commands). It returns the agent's pending commands,
// read with its sync inputs (ConnectInputs; pre when the connect read them with its claim), or
// ok false when they must be read again: the read failed, or a repair was enqueued after it.
func (g *Gateway) repairOnConnect(ctx context.Context, s *session, pre *store.ConnectRead) (pending []models.AgentCommand, ok bool) {
	var in store.SyncInputs
	if pre != nil {
		in, pending = pre.Inputs, pre.Pending
	} else {
		var err error
		if in, pending, err = g.store.ConnectInputs(ctx, s.clusterID, s.agentID); err != nil {
			return nil, false
		}
	}
	// The applied set of the ConnectRequest is fresh and whole, so no grace applies: an
	// acknowledged revision it lacks is missing now, even one acknowledged a moment ago.
	lim := g.SyncLimits()
	lim.Grace = 0
	cs := syncstate.Compute(in, time.Now().UTC(), lim)
	if a, found := cs.Agent(s.agentID); found && g.repair(ctx, s, cs, a, true) {
		return nil, false
	}
	return pending, true
}

// syncMetrics adapts the sync series to what the drift loop computes; the zero value records
// nothing.
type syncMetrics struct{ m *metrics.Sync }

func (s syncMetrics) setSync(cs syncstate.ClusterSync) {
	if s.m == nil {
		return
	}
	c := cs.Counts
	s.m.Set(cs.ClusterID.String(), map[string]int{syncstate.Synced: c.Synced, syncstate.Progressing: c.Progressing,
		syncstate.Failed: c.Failed, syncstate.Drifted: c.Drifted, syncstate.Stale: c.Stale})
}

func (s syncMetrics) retain(clusters map[string]bool) { s.m.Retain(clusters) }

func (s syncMetrics) repaired(publishes int, credentials bool) {
	s.m.Repaired("publish", publishes)
	if credentials {
		s.m.Repaired("credentials", 1)
	}
}
