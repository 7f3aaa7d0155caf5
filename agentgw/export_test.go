package agentgw

import "time"

// SetTokenStateTTL sets how long g serves an agent's token state from memory (tokenStates).
func SetTokenStateTTL(g *Gateway, ttl time.Duration) {
	g.tokens.mu.Lock()
	defer g.tokens.mu.Unlock()
	g.tokens.ttl = ttl
}
