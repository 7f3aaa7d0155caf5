package agentgw

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/store"
)

// tokenStateTTL bounds how long an agent's token state (status, cluster, token generation) is
// served from memory to its REST calls. Every change of it (revoke, rotate, delete) notifies
// every replica (store.AgentControlChannel), which drops the entry; the TTL bounds what a
// notification could not cover.
const tokenStateTTL = 5 * time.Second

// maxTokenStates bounds the cache; beyond it the cache is emptied.
const maxTokenStates = 100_000

// tokenStates caches, per agent, the row fields an agent JWT is checked against, for the REST
// API: each agent of a cluster fetches every publish's snapshot, one agents-row read each. It
// serves entries only while the gateway's LISTEN connection is up, so a revoked or rotated
// agent is refused as soon as the notification arrives; while it is down every call reads the
// row. Streams never use it: a connect reads the row.
type tokenStates struct {
	live atomic.Bool // the LISTEN connection is up
	ttl  time.Duration

	mu      sync.Mutex
	entries map[uuid.UUID]tokenState
	gen     uint64 // bumped by every drop; a read begun before one is not stored
}

type tokenState struct {
	st      store.AgentTokenState
	expires time.Time
}

func newTokenStates(ttl time.Duration) *tokenStates {
	return &tokenStates{ttl: ttl, entries: map[uuid.UUID]tokenState{}}
}

// get returns an agent's cached state and the generation to store a read under.
func (c *tokenStates) get(id uuid.UUID) (store.AgentTokenState, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || !c.live.Load() || time.Now().After(e.expires) {
		return store.AgentTokenState{}, false, c.gen
	}
	return e.st, true, c.gen
}

// put stores what a call read, unless something was dropped since it began reading.
func (c *tokenStates) put(id uuid.UUID, gen uint64, st store.AgentTokenState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live.Load() || gen != c.gen {
		return
	}
	if len(c.entries) >= maxTokenStates {
		clear(c.entries)
	}
	c.entries[id] = tokenState{st: st, expires: time.Now().Add(c.ttl)}
}

// drop forgets an agent whose token state changed.
func (c *tokenStates) drop(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.entries, id)
}

// setLive records whether the LISTEN connection is up. Either way everything cached is
// dropped: notifications sent while it was down are lost.
func (c *tokenStates) setLive(up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	c.live.Store(up)
}
