package agentgw

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/store"
)

// presence coalesces heartbeats: each one only updates memory, and every flush interval one
// statement writes the newest heartbeat of every agent whose applied revisions or credential
// checksum changed. A heartbeat that changes nothing is not written at all: liveness is judged
// in memory by the watchdog, and Postgres learns it from the replica's lease (see lease.go),
// one row per replica per flush, so 10,000 idle agents cost one row every 2 s, not 500 a
// second. The credential usage the heartbeats report is coalesced the same way: the newest use
// per credential and cluster, written by one more statement per flush.
type presence struct {
	g     *Gateway
	mu    sync.Mutex
	dirty map[uuid.UUID]beat
	used  map[usageKey]time.Time
}

// usageKey is a credential as used on one cluster: the cluster is the reporting agent's, taken
// from its authenticated session, never from the report.
type usageKey struct{ credential, cluster uuid.UUID }

const (
	// maxUsagePerHeartbeat bounds the usage entries taken from one heartbeat (the reference
	// agent sends at most 500); the rest of an oversized report is ignored.
	maxUsagePerHeartbeat = 1000
	// maxPendingUsage bounds the usage entries waiting for the next flush; beyond it new
	// credentials are dropped until the flush (a last-used time is informational).
	maxPendingUsage = 100000
)

type beat struct {
	s       *session
	at      time.Time
	applied []models.AppliedRevision // nil: unchanged
	creds   string                   // "": unchanged
}

func newPresence(g *Gateway) *presence {
	return &presence{g: g, dirty: map[uuid.UUID]beat{}, used: map[usageKey]time.Time{}}
}

// mark takes one heartbeat. A heartbeat with a digest carries the applied set only when it
// changed; when its digest names a set the server does not hold, askFull tells the caller to
// ask for the full list in the HeartbeatAck (the applied set is left as it was meanwhile).
// An agent before v0.3 sends no digest and the full list every time.
func (p *presence) mark(s *session, hb *agentv1.Heartbeat) (askFull bool) {
	b := beat{s: s, at: time.Now().UTC()}
	switch digest := hb.GetAppliedDigest(); {
	case digest == "" || hb.GetAppliedFull():
		b.applied = toApplied(hb.GetApplied())
		got := appliedDigest(b.applied)
		if digest != "" && digest != got {
			p.g.log.Info("heartbeat digest does not match its applied list; the list is taken", "agent_id", s.agentID, "digest", models.Cut(digest, 64))
		}
		s.mu.Lock()
		if got != s.appliedDigest {
			// Only when it changed: an unchanged digest keeps the string of the connect, so a
			// heartbeat leaves nothing on the heap that outlives it (a small object kept from
			// each heartbeat pins a span of the heartbeats' garbage per agent).
			s.appliedDigest = got
		}
		s.mu.Unlock()
	default:
		s.mu.Lock()
		askFull = digest != s.appliedDigest
		s.mu.Unlock()
	}
	if c := hb.GetCredentialChecksum(); c != "" && len(c) <= 64 && c != s.persistedCreds() {
		b.creds = c
	}
	sig := ""
	if b.applied != nil {
		j, _ := json.Marshal(b.applied)
		sig = string(j)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mergeUsageLocked(s.clusterID, hb.GetCredentialUsage(), b.at)
	prev, pending := p.dirty[s.agentID]
	changed := b.applied != nil && sig != s.persistedApplied() || b.creds != ""
	if !pending && !changed {
		return askFull // the lease vouches for a plain heartbeat
	}
	if pending && b.applied == nil {
		b.applied = prev.applied
	}
	if pending && b.creds == "" {
		b.creds = prev.creds
	}
	p.dirty[s.agentID] = b
	return askFull
}

// mergeUsageLocked folds one heartbeat's usage report into the pending usage. Entries with a
// malformed id or time are skipped; a time in the future counts as now.
func (p *presence) mergeUsageLocked(cluster uuid.UUID, usage []*agentv1.CredentialUsage, now time.Time) {
	for i, u := range usage {
		if i == maxUsagePerHeartbeat {
			break
		}
		id, err := uuid.Parse(u.GetCredentialId())
		if err != nil || u.GetLastUsedAt() == nil || u.GetLastUsedAt().CheckValid() != nil {
			continue
		}
		at := u.GetLastUsedAt().AsTime()
		if at.After(now) {
			at = now
		}
		k := usageKey{credential: id, cluster: cluster}
		prev, ok := p.used[k]
		if !ok && len(p.used) >= maxPendingUsage {
			continue
		}
		if !ok || at.After(prev) {
			p.used[k] = at
		}
	}
}

func (p *presence) forget(s *session) {
	p.mu.Lock()
	if b, ok := p.dirty[s.agentID]; ok && b.s == s {
		delete(p.dirty, s.agentID)
	}
	p.mu.Unlock()
}

func (p *presence) run(ctx context.Context) {
	t := time.NewTicker(p.g.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.flush(ctx)
		}
	}
}

// flush writes the pending heartbeats. An agent row whose session_id is no longer ours was
// claimed by a newer stream (on this or another replica): that stream wins and ours is closed.
func (p *presence) flush(ctx context.Context) {
	p.flushBeats(ctx)
	p.flushUsage(ctx)
}

func (p *presence) flushBeats(ctx context.Context) {
	p.mu.Lock()
	batch := p.dirty
	p.dirty = make(map[uuid.UUID]beat, len(batch))
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	beats := make([]store.Heartbeat, 0, len(batch))
	for id, b := range batch {
		hb := store.Heartbeat{AgentID: id, SessionID: b.s.id, At: b.at, CredentialChecksum: b.creds}
		if b.applied != nil {
			j, _ := json.Marshal(b.applied)
			hb.Applied = string(j)
		}
		beats = append(beats, hb)
	}
	kept, err := p.g.store.RecordHeartbeats(ctx, beats)
	if err != nil {
		if ctx.Err() == nil {
			p.g.log.Warn("heartbeat flush failed; retrying next tick", "agents", len(batch), "err", err)
			p.mu.Lock()
			for id, b := range batch {
				if _, newer := p.dirty[id]; !newer {
					p.dirty[id] = b
				}
			}
			p.mu.Unlock()
		}
		return
	}
	ok := make(map[uuid.UUID]bool, len(kept))
	for _, id := range kept {
		ok[id] = true
	}
	for id, b := range batch {
		if !ok[id] {
			b.s.close(agentv1.CloseReason_CLOSE_REASON_SUPERSEDED, "another stream of this agent is current")
			continue
		}
		sig := ""
		if b.applied != nil {
			j, _ := json.Marshal(b.applied)
			sig = string(j)
		}
		b.s.persisted(sig, b.creds)
	}
}

// flushUsage writes the pending credential usage in one statement: a credential's last_used_at
// moves forward to the newest reported use, and only on a cluster the credential was sent to
// (it has a rollout row there), so an agent cannot touch the credentials of another cluster.
// The rows are locked in id order, so two replicas flushing at once cannot deadlock.
func (p *presence) flushUsage(ctx context.Context) {
	p.mu.Lock()
	used := p.used
	p.used = make(map[usageKey]time.Time, len(used))
	p.mu.Unlock()
	if len(used) == 0 {
		return
	}
	uses := make([]store.CredentialUse, 0, len(used))
	for k, at := range used {
		uses = append(uses, store.CredentialUse{CredentialID: k.credential, ClusterID: k.cluster, At: at})
	}
	err := p.g.store.RecordCredentialUse(ctx, uses)
	if err != nil && ctx.Err() == nil {
		p.g.log.Warn("credential usage flush failed; retrying next tick", "entries", len(used), "err", err)
		p.mu.Lock()
		for k, at := range used {
			if prev, ok := p.used[k]; !ok || at.After(prev) {
				p.used[k] = at
			}
		}
		p.mu.Unlock()
	}
}
