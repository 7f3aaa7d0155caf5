package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// The connects of ClaimAgentsByTokenAndRead are claimed in one transaction, and each gets what
// its own ClaimAgentByTokenAndRead would have: its claim or the reason it was refused, and the
// reads of its own agent only.
func TestClaimAgentsByTokenAndReadInOneTransaction(t *testing.T) {
	t.Parallel()
	st, d := newStoreDB(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-group", "a1", "a2", "a3", "a4")
	for _, a := range agents[:2] {
		_, err := st.EnqueueCommand(ctx, &models.AgentCommand{ClusterID: cl.ID, AgentID: &a.ID, Kind: models.CommandCredentialRevoke,
			DedupeKey: "r-" + a.ID.String(), Payload: models.ToJSONMap(models.CredentialRevokePayload{CredentialID: uuid.NewString()})})
		require.NoError(t, err)
	}
	_, err := st.RevokeAgent(ctx, agents[3].ID, "test")
	require.NoError(t, err)
	conn := func(agent uuid.UUID) store.AgentConnection {
		return store.AgentConnection{AgentID: agent, ClusterID: cl.ID, SessionID: uuid.New(), ReplicaID: uuid.New(), IP: "10.0.0.9", At: time.Now().UTC()}
	}
	claims := []store.ConnectClaim{
		{conn(agents[0].ID), 1}, {conn(agents[1].ID), 1},
		{conn(agents[2].ID), 2}, // a retired generation
		{conn(agents[3].ID), 1}, // revoked
		{conn(uuid.New()), 1},   // no such agent
	}
	observed := 0
	st.ObserveDirect(func(string) { observed++ })
	res := st.ClaimAgentsByTokenAndRead(ctx, claims)
	require.Len(t, res, len(claims))
	require.Equal(t, 8*len(claims), observed, "eight statements a connect, in one batch")

	for i, r := range res[:2] {
		require.NoError(t, r.Err)
		require.True(t, r.Claim.Claimed)
		require.Equal(t, "c-group", r.Claim.ClusterName)
		require.NotNil(t, r.Read)
		require.Len(t, r.Read.Inputs.Agents, 1)
		require.Equal(t, agents[i].ID, r.Read.Inputs.Agents[0].ID, "a connect reads its own agent")
		require.Len(t, r.Read.Pending, 1)
		require.Equal(t, agents[i].ID, *r.Read.Pending[0].AgentID, "and its own commands")
		in, pending, err := st.ConnectInputs(ctx, cl.ID, agents[i].ID)
		require.NoError(t, err)
		require.Equal(t, in, r.Read.Inputs, "the reads are ConnectInputs' after the claim")
		require.Equal(t, pending, r.Read.Pending)
	}
	for i, r := range res[2:] {
		require.NoError(t, r.Err, i)
		require.False(t, r.Claim.Claimed, i)
		require.Nil(t, r.Read, i)
	}
	require.Equal(t, 1, res[2].Claim.State.TokenGeneration)
	require.Equal(t, models.AgentRevoked, res[3].Claim.State.Status)
	require.False(t, res[4].Claim.Found)

	require.Equal(t, d.RowXmin(t, "agents", agents[0].ID.String()), d.RowXmin(t, "agents", agents[1].ID.String()),
		"the claims are written by one transaction")
}

// A connect whose statements fail fails alone: its group's transaction is rolled back and each
// connect is claimed again on its own.
func TestClaimAgentsByTokenAndReadIsolatesAFailingConnect(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl, agents := clusterWithAgents(t, st, "c-fail", "a1", "a2", "a3")
	conn := func(agent uuid.UUID, ip string) store.AgentConnection {
		return store.AgentConnection{AgentID: agent, ClusterID: cl.ID, SessionID: uuid.New(), ReplicaID: uuid.New(), IP: ip, At: time.Now().UTC()}
	}
	// ip_address holds 45 characters: a longer one fails the claim's UPDATE.
	res := st.ClaimAgentsByTokenAndRead(ctx, []store.ConnectClaim{
		{conn(agents[0].ID, "10.0.0.1"), 1}, {conn(agents[1].ID, strings.Repeat("f", 60)), 1}, {conn(agents[2].ID, "10.0.0.3"), 1}})
	require.Error(t, res[1].Err)
	require.Nil(t, res[1].Read)
	for _, i := range []int{0, 2} {
		require.NoError(t, res[i].Err, i)
		require.True(t, res[i].Claim.Claimed, i)
		require.NotNil(t, res[i].Read, i)
		a, err := st.GetAgent(ctx, agents[i].ID)
		require.NoError(t, err)
		require.NotNil(t, a.SessionID, i)
	}
	a, err := st.GetAgent(ctx, agents[1].ID)
	require.NoError(t, err)
	require.Nil(t, a.SessionID, "the failed connect claimed nothing")
}
