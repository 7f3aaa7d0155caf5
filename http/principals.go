package http

import (
	"context"
	"crypto/sha256"
	"hash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/retry"
	"github.com/imprun/imprun-server/store"
)

// principalTTL bounds how long a verified token's principal (identity, user row, memberships
// with their tenants' status) is served from memory. Membership and tenant-status changes
// invalidate every replica's cache at once (store.IdentityChannel, LISTEN/NOTIFY); the TTL is
// the bound for what no notification covers: a token's expiry is checked at most this late
// (an entry also never outlives its token's exp), and a user's name or e-mail from a newer
// token of the same login shows up this late.
const principalTTL = 5 * time.Second

// maxCachedPrincipals bounds the cache; beyond it the cache is emptied (a flood of distinct
// tokens then costs what it cost without a cache).
const maxCachedPrincipals = 10000

// principalCache keeps, per bearer token (its SHA-256), what authenticate and tenantScope
// would otherwise load on every request: a signature check, the user upsert and the
// memberships query. It serves entries only while its LISTEN connection for
// store.IdentityChannel is up, so a removed membership or a suspended tenant is never served
// from memory after the change committed, on any replica, beyond the notification's delivery;
// while that connection is down (or was never started) every request loads afresh.
type principalCache struct {
	live atomic.Bool // the LISTEN connection is up

	// mu is read-locked by every authenticated request (get) and write-locked only by loads
	// and flushes, so concurrent requests do not queue on it.
	mu      sync.RWMutex
	entries map[[32]byte]*cachedPrincipal
	gen     uint64 // bumped by every flush; an entry loaded before a flush is not stored
}

type cachedPrincipal struct {
	id      *Identity
	user    models.User
	members []store.TenantMembership // nil until a tenant-scoped request loads them
	expires time.Time
}

func newPrincipalCache() *principalCache {
	return &principalCache{entries: map[[32]byte]*cachedPrincipal{}}
}

// tokenKey is the cache key of a bearer token: its SHA-256, hashed from a pooled buffer
// (sha256.Sum256([]byte(raw)) copied every request's token, a kilobyte, to the heap).
func tokenKey(raw string) (key [32]byte) {
	th := tokenHashers.Get().(*tokenHasher)
	th.buf = append(th.buf[:0], raw...)
	th.h.Reset()
	th.h.Write(th.buf)
	copy(key[:], th.h.Sum(th.sum[:0]))
	if cap(th.buf) <= 16<<10 { // an oversized token's buffer is not kept
		tokenHashers.Put(th)
	}
	return key
}

type tokenHasher struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

var tokenHashers = sync.Pool{New: func() any { return &tokenHasher{h: sha256.New()} }}

// get returns the cached principal of a token and the generation to store a load under.
func (c *principalCache) get(key [32]byte) (cachedPrincipal, bool, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.live.Load() {
		return cachedPrincipal{}, false, c.gen
	}
	e, ok := c.entries[key]
	if !ok || time.Now().After(e.expires) {
		return cachedPrincipal{}, false, c.gen
	}
	return *e, true, c.gen
}

// put stores what a request loaded, unless a flush happened since it started loading.
func (c *principalCache) put(key [32]byte, gen uint64, e cachedPrincipal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live.Load() || gen != c.gen {
		return
	}
	if len(c.entries) >= maxCachedPrincipals {
		clear(c.entries)
	}
	c.entries[key] = &e
}

// setMembers adds the memberships to a cached principal (loaded under generation gen).
func (c *principalCache) setMembers(key [32]byte, gen uint64, ms []store.TenantMembership) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && gen == c.gen && c.live.Load() {
		if ms == nil {
			ms = []store.TenantMembership{}
		}
		e.members = ms
	}
}

// flush drops every entry.
func (c *principalCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}

// listen holds the LISTEN connection until ctx ends, flushing on every notification and
// whenever the connection is (re)established, since changes made while it was down were not
// heard.
func (c *principalCache) listen(ctx context.Context, url string, log *slog.Logger) {
	bo := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		l, err := store.Listen(ctx, url, store.IdentityChannel)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("principal cache LISTEN failed; requests load their principal until it is back", "err", err)
			}
			retry.Sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		c.flush()
		c.live.Store(true)
		for {
			if _, _, err := l.Wait(ctx); err != nil {
				break
			}
			c.flush()
		}
		c.live.Store(false)
		c.flush()
		_ = l.Close()
	}
}

// ListenIdentityChanges keeps the API's principal cache in step with membership and tenant
// changes (LISTEN on the database at url) until ctx ends. Without it running, principals are
// never cached.
func (a *API) ListenIdentityChanges(ctx context.Context, url string) {
	a.principals.listen(ctx, url, a.log)
}

// IdentityListening reports whether the principal cache hears identity changes (and so caches).
func (a *API) IdentityListening() bool { return a.principals.live.Load() }
