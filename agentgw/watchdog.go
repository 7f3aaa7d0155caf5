package agentgw

import (
	"context"
	"fmt"
	"time"
)

// watchdog ends streams whose agent missed too many heartbeats.
//
// A heartbeat counts when this process reads it, so a process that cannot run (its CPU taken
// by a connect storm, a long GC, a throttled container) sees every agent fall silent at once
// although their heartbeats wait in its sockets. Ending those streams would turn the stall
// into a reconnect storm of the whole replica, and the storm into the next stall. So the
// watchdog measures its own lateness: every tick that comes later than its period is time the
// process was stalled (stalls), and an agent gets that time back on top of the limit (at most
// one limit more: an agent that is really gone is still ended while the process is slow).
func (g *Gateway) watchdog(ctx context.Context) {
	limit := time.Duration(g.cfg.MissedHeartbeats) * g.cfg.HeartbeatInterval
	period := max(g.cfg.HeartbeatInterval/2, 50*time.Millisecond)
	st := newStalls(period, limit)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now() // the tick's own time is when it was due, not when it ran
			st.wake(now)
			for _, s := range g.sessions.all() {
				seen := s.lastSeen()
				silent := now.Sub(seen)
				if silent <= limit {
					continue
				}
				credit := st.since(seen)
				if silent <= limit+credit {
					continue
				}
				g.log.Info("agent missed heartbeats; ending its stream", "agent_id", s.agentID, "cluster_id", s.clusterID,
					"missed", g.cfg.MissedHeartbeats, "silent", silent.Round(time.Millisecond), "stalled", credit.Round(time.Millisecond))
				s.end(fmt.Errorf("missed %d heartbeats", g.cfg.MissedHeartbeats))
			}
		}
	}
}

// stalls remembers how late the watchdog's recent ticks ran: a tick that runs d after the one
// before it, with period p between them, means the process was stalled for d - p.
type stalls struct {
	period, limit time.Duration
	last          time.Time
	recent        []stall // oldest first, none older than twice the limit
}

type stall struct {
	at time.Time     // when the late tick ran
	d  time.Duration // how late it was
}

func newStalls(period, limit time.Duration) *stalls {
	return &stalls{period: period, limit: limit}
}

// wake records a tick that ran at now.
func (st *stalls) wake(now time.Time) {
	if !st.last.IsZero() {
		if late := now.Sub(st.last) - st.period; late > st.period/10 {
			st.recent = append(st.recent, stall{at: now, d: late})
		}
	}
	st.last = now
	keep := 0
	for keep < len(st.recent) && now.Sub(st.recent[keep].at) > 2*st.limit {
		keep++
	}
	st.recent = st.recent[keep:]
}

// since is how long the process was stalled after t (ticks that ran late after t), at most
// the limit.
func (st *stalls) since(t time.Time) time.Duration {
	var d time.Duration
	for i := len(st.recent) - 1; i >= 0 && st.recent[i].at.After(t); i-- {
		d += st.recent[i].d
	}
	return min(d, st.limit)
}
