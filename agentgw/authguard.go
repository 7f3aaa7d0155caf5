package agentgw

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// authGuard keeps unauthenticated callers from making the gateway do expensive work: every
// failed ConnectRequest spends a token of its peer address's bucket, and a peer with an empty
// bucket is refused before anything touches the database; a registration token found unknown
// is remembered for a while, so repeating it costs no transaction either. Successful
// connects spend nothing, so a fleet reconnecting after a restart is never slowed.
type authGuard struct {
	every time.Duration // one failure is forgiven per every
	burst int
	ttl   time.Duration // how long an unknown registration token is remembered

	mu      sync.Mutex
	peers   map[string]*rate.Limiter
	unknown map[string]time.Time // token hash -> forget after
}

const (
	maxGuardPeers   = 50000
	maxUnknownCache = 50000
)

func newAuthGuard() *authGuard {
	return &authGuard{every: time.Second, burst: 10, ttl: 30 * time.Second,
		peers: map[string]*rate.Limiter{}, unknown: map[string]time.Time{}}
}

// allowed reports whether a peer may try to authenticate now.
func (g *authGuard) allowed(ip string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.peers[ip]
	return !ok || l.Tokens() >= 1
}

// failed spends one of the peer's tokens.
func (g *authGuard) failed(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.peers[ip]
	if !ok {
		if len(g.peers) >= maxGuardPeers {
			g.peers = map[string]*rate.Limiter{} // a flood of addresses: start over rather than grow
		}
		l = rate.NewLimiter(rate.Every(g.every), g.burst)
		g.peers[ip] = l
	}
	l.Allow()
}

// knownUnknown reports whether a registration token hash was found unknown recently.
func (g *authGuard) knownUnknown(hash string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.unknown[hash]
	if ok && time.Now().After(until) {
		delete(g.unknown, hash)
		return false
	}
	return ok
}

// rememberUnknown records a registration token hash that matched no token.
func (g *authGuard) rememberUnknown(hash string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.unknown) >= maxUnknownCache {
		g.unknown = map[string]time.Time{}
	}
	g.unknown[hash] = time.Now().Add(g.ttl)
}
