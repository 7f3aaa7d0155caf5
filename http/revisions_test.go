package http

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// The agents of a cluster fetching one revision at once cost one read; another cluster's
// agent never gets it from the cache; a read is served again only within revisionTTL; a
// failed read is not kept.
func TestRevisionCacheSharesOneRead(t *testing.T) {
	c := newRevisionCache()
	now := time.Now()
	c.now = func() time.Time { return now }
	var reads atomic.Int32
	release := make(chan struct{})
	read := func(context.Context) ([]byte, string, error) {
		reads.Add(1)
		<-release
		return []byte(`{"publish_id":"p"}`), "sum", nil
	}
	key := revisionKey{uuid.New(), uuid.New(), 1}
	first := make(chan error, 1)
	go func() {
		snap, sum, err := c.get(context.Background(), key, read)
		if err == nil && (sum != "sum" || string(snap) != `{"publish_id":"p"}`) {
			err = errors.New("wrong snapshot")
		}
		first <- err
	}()
	require.Eventually(t, func() bool { return reads.Load() == 1 }, 5*time.Second, time.Millisecond)
	// While that read is under way, another agent of the cluster waits for it instead of
	// reading: with its context ended it gets that error, and its own read never runs.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := c.get(ended, key, func(context.Context) ([]byte, string, error) {
		reads.Add(1)
		return []byte(`{}`), "other", nil
	})
	require.ErrorIs(t, err, context.Canceled)
	close(release)
	require.NoError(t, <-first)
	require.EqualValues(t, 1, reads.Load())

	_, _, err = c.get(context.Background(), key, read)
	require.NoError(t, err)
	require.EqualValues(t, 1, reads.Load(), "within the TTL: served again")

	other := key
	other.cluster = uuid.New()
	_, _, err = c.get(context.Background(), other, read)
	require.NoError(t, err)
	require.EqualValues(t, 2, reads.Load(), "another cluster's agent reads for itself")

	now = now.Add(revisionTTL)
	_, _, err = c.get(context.Background(), key, read)
	require.NoError(t, err)
	require.EqualValues(t, 3, reads.Load(), "expired: read again")
	require.Equal(t, len(`{"publish_id":"p"}`), c.bytes, "only the live entry counts: the expired ones are gone, their bytes with them")

	boom := errors.New("down")
	failKey := revisionKey{uuid.New(), uuid.New(), 2}
	fails := 0
	failing := func(context.Context) ([]byte, string, error) { fails++; return nil, "", boom }
	_, _, err = c.get(context.Background(), failKey, failing)
	require.ErrorIs(t, err, boom)
	_, _, err = c.get(context.Background(), failKey, failing)
	require.ErrorIs(t, err, boom)
	require.Equal(t, 2, fails, "a failed read is not kept")
}
