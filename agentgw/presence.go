package agentgw

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// presence coalesces heartbeats: each one only updates memory, and every flush interval one
// statement writes the newest heartbeat of every agent that sent one. 10,000 agents at one
// heartbeat each per 10 s become one UPDATE every 2 s, not 1,000 row updates a second.
type presence struct {
	g     *Gateway
	mu    sync.Mutex
	dirty map[uuid.UUID]beat
}

type beat struct {
	s       *session
	at      time.Time
	applied []models.AppliedRevision // nil: unchanged
}

func newPresence(g *Gateway) *presence { return &presence{g: g, dirty: map[uuid.UUID]beat{}} }

func (p *presence) mark(s *session, applied []*agentv1.AppliedRevision) {
	b := beat{s: s, at: time.Now().UTC()}
	if applied != nil {
		b.applied = make([]models.AppliedRevision, 0, len(applied))
		for _, r := range applied {
			b.applied = append(b.applied, models.AppliedRevision{PublishID: r.GetPublishId(), Revision: int(r.GetRevision()), Checksum: r.GetChecksum()})
		}
	}
	p.mu.Lock()
	if prev, ok := p.dirty[s.agentID]; ok && b.applied == nil {
		b.applied = prev.applied
	}
	p.dirty[s.agentID] = b
	p.mu.Unlock()
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
	p.mu.Lock()
	batch := p.dirty
	p.dirty = make(map[uuid.UUID]beat, len(batch))
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ids := make([]string, 0, len(batch))
	sids := make([]string, 0, len(batch))
	ats := make([]time.Time, 0, len(batch))
	applied := make([]string, 0, len(batch))
	for id, b := range batch {
		ids = append(ids, id.String())
		sids = append(sids, b.s.id.String())
		ats = append(ats, b.at)
		if b.applied == nil {
			applied = append(applied, "")
		} else {
			j, _ := json.Marshal(b.applied)
			applied = append(applied, string(j))
		}
	}
	var kept []uuid.UUID
	err := p.g.db(ctx).Raw(`UPDATE agents a SET last_heartbeat_at = v.at,
			applied = CASE WHEN v.applied = '' THEN a.applied ELSE v.applied::jsonb END
		FROM unnest(?::uuid[], ?::uuid[], ?::timestamptz[], ?::text[]) AS v(id, sid, at, applied)
		WHERE a.id = v.id AND a.session_id = v.sid AND a.status = 'connected'
		RETURNING a.id`, pgArray(ids), pgArray(sids), pgTimeArray(ats), pgArray(applied)).Scan(&kept).Error
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
		}
	}
}
