package agentgw

import (
	"context"
	"sync"
	"time"

	"github.com/imprun/imprun-server/store"
)

// claimGroups commits the claims of concurrent JWT connects together (group commit): a connect
// that finds a runner free has its claim run at once, alone; the connects that arrive while
// every runner is busy wait, and the next free runner claims all of them in one batch
// (store.ClaimAgentsByTokenAndRead: one round trip and one transaction, where each was its
// own). A storm's connects then pay one write, one commit and one wake of a Postgres backend
// per group instead of per agent, and take as many of the pool's connections as there are
// runners; a quiet replica's connect waits for nothing.
type claimGroups struct {
	claim   func(context.Context, []store.ConnectClaim) []store.ClaimResult
	runners int         // most groups in flight at once
	max     int         // most connects in a group
	observe func(n int) // each group's size (metrics)

	mu      sync.Mutex
	waiting []*claimCall
	running int
}

// claimCall is one connect waiting for its group.
type claimCall struct {
	ctx  context.Context
	c    store.ConnectClaim
	res  store.ClaimResult
	done chan struct{}
}

// claimTimeout bounds a group's round trip. A connect waits for its group's answer even when
// its stream has ended meanwhile: a claim committed for a connect that stopped listening would
// leave the agent's row naming a session nobody holds, so the connect goes on to register and
// release it (Connect's markDisconnected) as one whose stream broke after its claim.
const claimTimeout = 15 * time.Second

func newClaimGroups(claim func(context.Context, []store.ConnectClaim) []store.ClaimResult, runners, max int, observe func(n int)) *claimGroups {
	return &claimGroups{claim: claim, runners: runners, max: max, observe: observe}
}

// do claims c in the next group and returns its result.
func (g *claimGroups) do(ctx context.Context, c store.ConnectClaim) store.ClaimResult {
	call := &claimCall{ctx: ctx, c: c, done: make(chan struct{})}
	g.mu.Lock()
	g.waiting = append(g.waiting, call)
	lead := g.running < g.runners
	if lead {
		g.running++
	}
	g.mu.Unlock()
	if lead {
		// This connect runs the next group (its own, unless more than max were waiting); the
		// groups of those waiting after it run on a goroutine of their own, so its answer does
		// not wait for theirs.
		if g.runGroup() {
			goOffStack(g.lead)
		}
	}
	<-call.done
	return call.res
}

// lead runs groups until none is waiting.
func (g *claimGroups) lead() {
	for g.runGroup() {
	}
}

// runGroup claims what waits (up to max) and reports whether more wait; when none waits, the
// runner is released and it reports false.
func (g *claimGroups) runGroup() bool {
	g.mu.Lock()
	n := min(len(g.waiting), g.max)
	if n == 0 {
		g.running--
		g.mu.Unlock()
		return false
	}
	group := make([]*claimCall, n)
	copy(group, g.waiting)
	rest := copy(g.waiting, g.waiting[n:])
	clear(g.waiting[rest:]) // the calls handed out are not kept by the backing array
	g.waiting = g.waiting[:rest]
	g.mu.Unlock()
	g.observe(n)

	claims := make([]store.ConnectClaim, n)
	for i, c := range group {
		claims[i] = c.c
	}
	// The group's context is the first connect's without its end (its trace, not its stream).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(group[0].ctx), claimTimeout)
	res := g.claim(ctx, claims)
	cancel()
	for i, c := range group {
		c.res = res[i]
		close(c.done)
	}
	g.mu.Lock()
	more := len(g.waiting) > 0
	if !more {
		g.running--
	}
	g.mu.Unlock()
	return more
}

// claimRunnersOf is how many groups run at once for slots connects admitted at once: one for
// every eight slots. At 10,000 agents connecting to one replica (slots 10), one runner made
// groups of four on average, and the connects took 4.3-5.6 s and 1.8-2.1 s of Postgres's CPU,
// against 5.7-5.9 s and 3.1-3.4 s claimed one by one the same hour; two runners, smaller
// groups, saved less (5.7 s, 2.2 s).
func claimRunnersOf(slots int) int { return max(1, slots/8) }
