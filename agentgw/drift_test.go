package agentgw

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The drift check waits its interval, or ten times what its last pass took when that is
// longer: it never takes more than a tenth of the replica's time.
func TestDriftPauseBoundsTheCheck(t *testing.T) {
	require.Equal(t, 10*time.Second, driftPause(10*time.Second, 50*time.Millisecond))
	require.Equal(t, 10*time.Second, driftPause(10*time.Second, time.Second))
	require.Equal(t, 30*time.Second, driftPause(10*time.Second, 3*time.Second))
}
