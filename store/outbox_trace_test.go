package store_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
)

// The trace context of the span that queued a command comes back with the command (what the
// gateway sends the agent), through both enqueue paths; without one it is stored as {}.
func TestOutboxKeepsTraceContext(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, _ := clusterWithAgents(t, st, "c1")
	tc := models.TraceContext{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

	one := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, DedupeKey: "one", TraceContext: tc}
	_, err := st.EnqueueCommand(ctx, one)
	require.NoError(t, err)
	untraced := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, DedupeKey: "untraced"}
	_, err = st.EnqueueCommand(ctx, untraced)
	require.NoError(t, err)
	many := []*models.AgentCommand{
		{ClusterID: cl.ID, Kind: models.CommandCredentialRevoke, DedupeKey: "many-1", TraceContext: tc},
		{ClusterID: cl.ID, Kind: models.CommandCredentialRevoke, DedupeKey: "many-2"},
	}
	require.NoError(t, st.EnqueueCommands(ctx, many))
	require.Equal(t, tc, many[0].TraceContext, "returned by the insert")

	got, err := st.GetCommands(ctx, []uuid.UUID{one.ID, untraced.ID, many[0].ID, many[1].ID})
	require.NoError(t, err)
	require.Equal(t, tc, got[one.ID].TraceContext)
	require.Equal(t, tc, got[many[0].ID].TraceContext)
	require.Empty(t, got[untraced.ID].TraceContext)
	require.Empty(t, got[many[1].ID].TraceContext)
}
