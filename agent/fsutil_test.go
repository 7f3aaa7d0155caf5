package agent

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ensurePrivateDir makes every directory it creates private, the leaf also when it existed
// with looser permissions.
func TestEnsurePrivateDirCreatesPrivateDirectories(t *testing.T) {
	base := t.TempDir()
	leaf := filepath.Join(base, "publishes", "p1")
	require.NoError(t, ensurePrivateDir(leaf))
	for _, d := range []string{filepath.Join(base, "publishes"), leaf} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.True(t, fi.IsDir())
		require.Equal(t, stateDirMode, fi.Mode().Perm(), d)
	}
	require.NoError(t, os.Chmod(leaf, 0o755))
	require.NoError(t, ensurePrivateDir(leaf))
	fi, err := os.Stat(leaf)
	require.NoError(t, err)
	require.Equal(t, stateDirMode, fi.Mode().Perm())
}

// makeDir says whether it created the directory (apply skips looking for old revisions in a
// new one), with the private mode in every case, and fails on a file in the way.
func TestMakeDirReportsCreation(t *testing.T) {
	base := t.TempDir()
	for _, tc := range []struct {
		dir     string
		created bool
	}{
		{filepath.Join(base, "p1"), true},          // in a directory that exists
		{filepath.Join(base, "p1"), false},         // again
		{filepath.Join(base, "a", "b", "c"), true}, // with parents
		{filepath.Join(base, "a", "b"), false},
	} {
		created, err := makeDir(tc.dir, false)
		require.NoError(t, err, tc.dir)
		require.Equal(t, tc.created, created, tc.dir)
		fi, err := os.Stat(tc.dir)
		require.NoError(t, err)
		require.Equal(t, stateDirMode, fi.Mode().Perm(), tc.dir)
	}
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err := makeDir(file, false)
	require.Error(t, err, "a file is not a directory")
}

// Concurrent syncs of one path share fsyncs: callers that arrive while one runs (it may have
// started before their writes, so it does not count for them) all wait for the next, which one
// of them runs. Every caller returns only after a sync that started after its call.
func TestGroupSyncSharesFsyncs(t *testing.T) {
	const callers = 20
	path := filepath.Join(t.TempDir(), "log")
	var (
		mu       sync.Mutex
		events   int   // a clock: calls and sync starts, in order
		finished []int // the start times of the syncs that ended
	)
	tick := func() int { mu.Lock(); defer mu.Unlock(); events++; return events }
	first := true
	do := func() error {
		start := tick()
		if first {
			// Hold the first sync until every other caller is waiting in groupSync.
			first = false
			for {
				fsyncGroups.Lock()
				n := fsyncGroups.m[path].users
				fsyncGroups.Unlock()
				if n == callers {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		mu.Lock()
		finished = append(finished, start)
		mu.Unlock()
		return nil
	}
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			called := tick()
			require.NoError(t, groupSync(path, do))
			mu.Lock()
			defer mu.Unlock()
			covered := false
			for _, s := range finished {
				covered = covered || s > called
			}
			require.True(t, covered, "returned before a sync that started after the call")
		})
	}
	wg.Wait()
	require.Len(t, finished, 2, "the first sync, then one for everyone who came during it")
	fsyncGroups.Lock()
	defer fsyncGroups.Unlock()
	require.NotContains(t, fsyncGroups.m, path, "the entry goes with its last user")
}

// A failed fsync is reported to every caller it covered.
func TestGroupSyncReportsFailure(t *testing.T) {
	boom := errors.New("EIO")
	require.ErrorIs(t, groupSync(filepath.Join(t.TempDir(), "x"), func() error { return boom }), boom)
}
