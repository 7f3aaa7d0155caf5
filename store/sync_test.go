package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// An agent's sync inputs are the cluster's, narrowed to that agent: the same desired state,
// its own row, repairs, deliveries and pending credential commands, nothing of the others.
func TestAgentSyncInputsAreTheClustersNarrowedToTheAgent(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	cl := &models.Cluster{Name: "c1", Region: "r", Status: models.ClusterActive}
	require.NoError(t, st.CreateCluster(ctx, cl))
	agents := make([]models.Agent, 3)
	for i, name := range []string{"a1", "a2", "a3"} {
		agents[i] = models.Agent{ClusterID: cl.ID, Name: name, Status: models.AgentConnected, TokenGeneration: 1,
			Applied: models.JSON[[]models.AppliedRevision]{V: []models.AppliedRevision{}}}
		require.NoError(t, st.CreateAgent(ctx, &agents[i]))
	}
	a1, a2 := agents[0].ID, agents[1].ID
	deploy := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandDeploy, DedupeKey: "d1", SupersedeKey: "publish/p1",
		Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Checksum: "sum"})}
	repair := &models.AgentCommand{ClusterID: cl.ID, AgentID: &a2, Kind: models.CommandDeploy, Priority: models.PriorityRepair, DedupeKey: "r1",
		SupersedeKey: "repair/" + a2.String() + "/p1", Payload: models.ToJSONMap(models.DeployPayload{PublishID: "p1", Revision: 2, Attempt: 1})}
	cred := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert, DedupeKey: "c1", SupersedeKey: "credential/x",
		Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
	for _, c := range []*models.AgentCommand{deploy, repair, cred} {
		_, err := st.EnqueueCommand(ctx, c)
		require.NoError(t, err)
	}
	now := time.Now().UTC()
	require.NoError(t, st.WriteDeliveries(ctx, []store.DeliveryRecord{
		{CommandID: deploy.ID, AgentID: a1, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{"message": "ok"}},
		{CommandID: deploy.ID, AgentID: a2, Status: models.DeliverySent, At: now},
		{CommandID: cred.ID, AgentID: a2, Status: models.DeliveryAcked, At: now, ResultStatus: "succeeded", Result: map[string]any{}},
	}))

	whole, err := st.ClusterSyncInputs(ctx, cl.ID)
	require.NoError(t, err)
	require.Len(t, whole.Agents, 3)
	for _, a := range agents {
		got, err := st.AgentSyncInputs(ctx, cl.ID, a.ID)
		require.NoError(t, err)
		want := store.SyncInputs{Cluster: whole.Cluster, Credentials: whole.Credentials, CredentialsPending: map[uuid.UUID]int{}}
		for _, x := range whole.Agents {
			if x.ID == a.ID {
				want.Agents = append(want.Agents, x)
			}
		}
		for _, d := range whole.Deploys {
			if d.AgentID == nil || *d.AgentID == a.ID {
				want.Deploys = append(want.Deploys, d)
			}
		}
		for _, d := range whole.Deliveries {
			if d.AgentID == a.ID {
				want.Deliveries = append(want.Deliveries, d)
			}
		}
		if n, ok := whole.CredentialsPending[a.ID]; ok {
			want.CredentialsPending[a.ID] = n
		}
		require.Equal(t, want, got, "agent %s", a.Name)
	}
	require.Equal(t, 1, whole.CredentialsPending[a1], "the credential a1 has not acknowledged")
	require.NotContains(t, whole.CredentialsPending, a2)
}
