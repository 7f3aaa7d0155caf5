package agentgw

import (
	"time"

	"github.com/google/uuid"
)

// SetTokenStateTTL sets how long g serves an agent's token state from memory (tokenStates).
func SetTokenStateTTL(g *Gateway, ttl time.Duration) {
	g.tokens.mu.Lock()
	defer g.tokens.mu.Unlock()
	g.tokens.ttl = ttl
}

// SetClaimedHook has f run between a JWT connect's claim of its agent and the session's
// registration.
func SetClaimedHook(g *Gateway, f func(agentID uuid.UUID)) { g.claimedHook = f }

// ControlSeq is how many agent-control notifications g has handled.
func ControlSeq(g *Gateway) uint64 { return g.controlSeq.Load() }

// DriftPause is driftPause, for the external tests.
var DriftPause = driftPause

// SetAuthTimeout sets how long a new stream of g may take to send its ConnectRequest.
func SetAuthTimeout(g *Gateway, d time.Duration) { g.authTimeout = d }

// CommandSeq is g's count of command notifications and LISTEN connection changes.
func CommandSeq(g *Gateway) uint64 { return g.commandSeq.Load() }

// NotifiedLookedUp is how many notified commands g has looked the streams of up.
func NotifiedLookedUp(g *Gateway) uint64 { return g.notifiedLookedUp.Load() }

// SetAdmission gives g new connect bounds (before any connect).
func SetAdmission(g *Gateway, slots, queue int) { g.admit = newAdmission(slots, queue) }

// HoldConnectSlot takes one of g's connect slots until the returned function is called.
func HoldConnectSlot(g *Gateway) (release func()) {
	g.admit.slots <- struct{}{}
	return g.admit.leave
}

// QueuedConnects is how many connects of g wait for a slot.
func QueuedConnects(g *Gateway) int64 { return g.admit.queued.Load() }

// SetNotifiedReadHook has f run before each read of notified commands; an error it returns
// fails that read.
func SetNotifiedReadHook(g *Gateway, f func() error) { g.notifiedReadHook.Store(&f) }
