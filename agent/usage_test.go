package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

func TestUsageLogTakeRestore(t *testing.T) {
	t.Parallel()
	l := newUsageLog()
	t0 := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	l.record("a", t0.Add(2*time.Second))
	l.record("a", t0) // out of order: the newest time wins
	l.record("b", t0.Add(time.Second))
	assert.Nil(t, newUsageLog().take(10), "nothing used, nothing reported")

	// Capped, least recently used first; what was taken is gone.
	got := l.take(1)
	require.Len(t, got, 1)
	assert.Equal(t, "b", got[0].GetCredentialId())
	got = l.take(10)
	require.Len(t, got, 1)
	assert.Equal(t, "a", got[0].GetCredentialId())
	assert.Equal(t, int64(2), got[0].GetRequests())
	assert.True(t, got[0].GetLastUsedAt().AsTime().Equal(t0.Add(2*time.Second)))
	assert.Nil(t, l.take(10))

	// A heartbeat that could not be sent gives its entries back, merged with newer uses.
	l.record("a", t0.Add(time.Minute))
	l.restore(got)
	again := l.take(10)
	require.Len(t, again, 1)
	assert.Equal(t, int64(3), again[0].GetRequests())
	assert.True(t, again[0].GetLastUsedAt().AsTime().Equal(t0.Add(time.Minute)))
}

// A full heartbeat stays far below the smallest message limit a server is configured with in
// tests (64 KiB).
func TestUsageHeartbeatSize(t *testing.T) {
	t.Parallel()
	l := newUsageLog()
	for i := range maxUsagePerHeartbeat + 10 {
		l.record(fmt.Sprintf("0b6f3a8e-8d1c-4e57-9a3b-%012d", i), time.Now())
	}
	hb := &agentv1.Heartbeat{CredentialUsage: l.take(maxUsagePerHeartbeat)}
	require.Len(t, hb.GetCredentialUsage(), maxUsagePerHeartbeat)
	assert.Less(t, proto.Size(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Heartbeat{Heartbeat: hb}}), 48<<10)
	assert.Len(t, l.take(maxUsagePerHeartbeat), 10, "the rest waits for the next heartbeat")
}

// TestAgentReportsCredentialUsage: requests the agent's Verifier allows are reported with the
// next heartbeat, once; refused requests are not.
func TestAgentReportsCredentialUsage(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, done := f.start(ctx)
	s := f.session()
	require.NotNil(t, s.next().GetConnectRequest())
	s.send(connectResponse("jwt-1", "refresh-1", 1))
	s.send(upsert("cmd-1", 1, "secret-1"))
	require.True(t, s.next().GetCommandAck().GetSuccess())

	usedAt := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	v := a.Verifier(WithClock(func() time.Time { return usedAt }))
	require.True(t, v.VerifyAPIKey(testPublish, "imp_ab12cd34.secret-1").Allowed)
	require.True(t, v.VerifyAPIKey(testPublish, "imp_ab12cd34.secret-1").Allowed)
	require.False(t, v.VerifyAPIKey(testPublish, "imp_ab12cd34.wrong").Allowed)
	require.False(t, v.VerifyAPIKey("other-publish", "imp_ab12cd34.secret-1").Allowed)

	var reported *agentv1.Heartbeat
	require.Eventually(t, func() bool {
		hb := s.lastHB.Load()
		if hb != nil && len(hb.GetCredentialUsage()) > 0 {
			reported = hb
			return true
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "no heartbeat reported the usage")
	require.Len(t, reported.GetCredentialUsage(), 1)
	u := reported.GetCredentialUsage()[0]
	assert.Equal(t, "cred-1", u.GetCredentialId())
	assert.Equal(t, int64(2), u.GetRequests(), "allowed requests only")
	assert.True(t, u.GetLastUsedAt().AsTime().Equal(usedAt))

	// Cleared once sent: the next heartbeat reports nothing.
	n := s.heartbeats.Load()
	require.Eventually(t, func() bool { return s.heartbeats.Load() > n }, 5*time.Second, 10*time.Millisecond)
	assert.Empty(t, s.lastHB.Load().GetCredentialUsage())

	cancel()
	require.ErrorIs(t, waitRun(t, done), context.Canceled)
}
