package agentgw

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStallsCreditOnlyLateTicksAfterTheAgentWasSeen(t *testing.T) {
	period, limit := 5*time.Second, 30*time.Second
	st := newStalls(period, limit)
	t0 := time.Unix(1_000_000, 0)
	st.wake(t0)
	st.wake(t0.Add(5 * time.Second))                       // on time
	st.wake(t0.Add(10*time.Second + 200*time.Millisecond)) // 200 ms late: noise, below a tenth of the period
	require.Zero(t, st.since(t0), "ticks on time and jitter are no stall")

	seen := t0.Add(12 * time.Second)
	st.wake(t0.Add(27*time.Second + 200*time.Millisecond)) // 17 s after the one before: 12 s stalled
	require.Equal(t, 12*time.Second, st.since(seen))
	st.wake(t0.Add(40*time.Second + 200*time.Millisecond)) // 13 s: 8 s more
	require.Equal(t, 20*time.Second, st.since(seen))
	require.Equal(t, 8*time.Second, st.since(t0.Add(30*time.Second)), "only what ran late after the agent was last seen")

	st.wake(t0.Add(80*time.Second + 200*time.Millisecond)) // 40 s: 35 s more, and the credit stops at the limit
	require.Equal(t, limit, st.since(seen))

	// Stalls older than twice the limit are forgotten.
	at := t0.Add(80*time.Second + 200*time.Millisecond)
	for range 20 {
		at = at.Add(period)
		st.wake(at)
	}
	require.Zero(t, st.since(seen))
	require.Empty(t, st.recent)
}
