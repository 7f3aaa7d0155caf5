package agentgw

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/store"
)

// Connects that arrive while every runner is busy are claimed together in the next group, each
// gets its own result, and no more groups run at once than there are runners.
func TestClaimGroupsCommitWaitingConnectsTogether(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	inFlight, most := 0, 0
	g := newClaimGroups(func(ctx context.Context, cs []store.ConnectClaim) []store.ClaimResult {
		mu.Lock()
		sizes = append(sizes, len(cs))
		inFlight++
		most = max(most, inFlight)
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release // the first group holds the only runner while the others arrive
		}
		res := make([]store.ClaimResult, len(cs))
		for i, c := range cs {
			res[i] = store.ClaimResult{Claim: store.AgentTokenClaim{Claimed: true, ClusterName: c.Conn.AgentID.String()}}
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return res
	}, 1, 4, func(int) {})

	ids := make([]uuid.UUID, 7)
	got := make([]store.ClaimResult, len(ids))
	var wg sync.WaitGroup
	call := func(i int) {
		defer wg.Done()
		got[i] = g.do(context.Background(), store.ConnectClaim{Conn: store.AgentConnection{AgentID: ids[i]}, Generation: 1})
	}
	for i := range ids {
		ids[i] = uuid.New()
	}
	wg.Add(1)
	go call(0)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(sizes) == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i < len(ids); i++ {
		wg.Add(1)
		go call(i)
	}
	require.Eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.waiting) == len(ids)-1 }, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()

	require.Equal(t, []int{1, 4, 2}, sizes, "the first alone, then the six waiting in groups of at most four")
	require.Equal(t, 1, most, "one runner: one group at a time")
	for i, r := range got {
		require.Equal(t, ids[i].String(), r.Claim.ClusterName, "each connect gets its own result")
	}
	require.Eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.running == 0 }, 5*time.Second, time.Millisecond,
		"the runner is released once none waits")
}

// A connect whose stream ends while its group runs still gets its group's result (a claim
// committed for it must be released by its connect), and the group is not cut short by it.
func TestClaimGroupOutlivesTheStreamOfItsFirstConnect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	g := newClaimGroups(func(gctx context.Context, cs []store.ConnectClaim) []store.ClaimResult {
		close(started)
		cancel()
		time.Sleep(20 * time.Millisecond)
		if gctx.Err() != nil {
			return []store.ClaimResult{{Err: gctx.Err()}}
		}
		return []store.ClaimResult{{Claim: store.AgentTokenClaim{Claimed: true}}}
	}, 1, 4, func(int) {})
	r := g.do(ctx, store.ConnectClaim{})
	<-started
	require.NoError(t, r.Err)
	require.True(t, r.Claim.Claimed)
}
