package agent

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Deploys of different publishes overlap (up to the bound), one publish's run in order, and a
// credential command waits until no deploy runs.
func TestDeployRunnerOrderAndConcurrency(t *testing.T) {
	r := newDeployRunner()
	var running, peak atomic.Int32
	var mu sync.Mutex
	order := map[string][]int{}
	for i := range 40 {
		pub := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}[i%10]
		r.submit(pub, func() {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			order[pub] = append(order[pub], i)
			mu.Unlock()
			running.Add(-1)
		})
	}
	var sawRunning int32 = -1
	require.NoError(t, r.exclusive(func() error { sawRunning = running.Load(); return nil }))
	r.wait()
	require.Equal(t, int32(0), sawRunning, "a credential command ran beside a deploy")
	require.LessOrEqual(t, peak.Load(), int32(maxConcurrentDeploys))
	require.Greater(t, peak.Load(), int32(1), "deploys of different publishes did not overlap")
	for pub, got := range order {
		require.Len(t, got, 4, pub)
		require.IsIncreasing(t, got, "publish %s ran out of order", pub)
	}
}
