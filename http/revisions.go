package http

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
)

// revisionCache shares one read of a revision's snapshot between the agents of a cluster.
// Every agent of the cluster fetches the revision it was told to apply at about the same time,
// so a cluster of N agents read the same row N times per publish. A revision never changes once
// written; what can change is whether it is still there (its publish deleted), so an entry
// lives for revisionTTL only, and only agents of the cluster it was read for get it (the key
// holds the cluster). Concurrent misses of one key wait for the first one's read. Errors are
// not kept.
type revisionCache struct {
	mu      sync.Mutex
	entries map[revisionKey]*revisionEntry
	bytes   int
	now     func() time.Time
}

type revisionKey struct {
	cluster, publish uuid.UUID
	revision         int
}

type revisionEntry struct {
	ready    chan struct{} // closed once the read ended
	snapshot []byte
	checksum string
	err      error
	expires  time.Time
}

const (
	// revisionTTL is how long a read snapshot is served again: long enough for a cluster's
	// agents to fetch it after one command, short enough that a deleted publish's revision
	// is soon gone for them too.
	revisionTTL = 10 * time.Second
	// revisionCacheBytes bounds the snapshots held; a snapshot past revisionMaxEntry is
	// never kept.
	revisionCacheBytes = 16 << 20
	revisionMaxEntry   = 1 << 20
)

func newRevisionCache() *revisionCache {
	return &revisionCache{entries: map[revisionKey]*revisionEntry{}, now: time.Now}
}

// get returns the snapshot of key, reading it with read unless a read of it ended within
// revisionTTL or is under way.
func (c *revisionCache) get(ctx context.Context, key revisionKey, read func(context.Context) ([]byte, string, error)) ([]byte, string, error) {
	c.mu.Lock()
	now := c.now()
	if e, ok := c.entries[key]; ok && (e.expires.IsZero() || now.Before(e.expires)) {
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
		if e.err == nil {
			return e.snapshot, e.checksum, nil
		}
		// The read this caller waited on failed (perhaps only its caller's context ended):
		// read for itself.
		return read(ctx)
	}
	if old, ok := c.entries[key]; ok { // expired
		c.bytes -= len(old.snapshot)
	}
	e := &revisionEntry{ready: make(chan struct{})}
	c.entries[key] = e
	c.sweep(now)
	c.mu.Unlock()

	e.snapshot, e.checksum, e.err = read(ctx)
	c.mu.Lock()
	if e.err != nil || len(e.snapshot) > revisionMaxEntry || c.bytes+len(e.snapshot) > revisionCacheBytes {
		if c.entries[key] == e {
			delete(c.entries, key)
		}
	} else {
		e.expires = c.now().Add(revisionTTL)
		c.bytes += len(e.snapshot)
	}
	c.mu.Unlock()
	close(e.ready)
	return e.snapshot, e.checksum, e.err
}

// sweep drops the expired entries; the caller holds c.mu.
func (c *revisionCache) sweep(now time.Time) {
	for k, e := range c.entries {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			c.bytes -= len(e.snapshot)
			delete(c.entries, k)
		}
	}
}
