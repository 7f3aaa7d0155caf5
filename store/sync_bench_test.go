package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// BenchmarkClusterSyncInputs is one drift check's read of a cluster of 1,000 agents with 100
// credentials, every one acknowledged by every agent (a cluster at rest): when the agents report
// the desired credential set (the agent since v0.3), beside the same data when they report none
// (agents before v0.3), whose credential commands are then all counted (as every agent's are
// during a rollout) from the cluster's acknowledgements at once; pair by pair, as every check
// counted them before, that was agents x credentials lookups.
func BenchmarkClusterSyncInputs(b *testing.B) {
	const agents, credentials = 1000, 100
	st := newStore(b)
	ctx := context.Background()
	cluster := func(name, checksum string) uuid.UUID {
		cl := &models.Cluster{Name: name, Region: "r", Status: models.ClusterActive}
		require.NoError(b, st.CreateCluster(ctx, cl))
		ids := make([]uuid.UUID, agents)
		for i := range ids {
			a := models.Agent{ClusterID: cl.ID, Name: fmt.Sprint("agent-", i), Status: models.AgentConnected, TokenGeneration: 1,
				CredentialChecksum: checksum, Applied: models.JSON[[]models.AppliedRevision]{V: []models.AppliedRevision{}}}
			require.NoError(b, st.CreateAgent(ctx, &a))
			ids[i] = a.ID
		}
		for i := range credentials {
			c := &models.AgentCommand{ClusterID: cl.ID, Kind: models.CommandCredentialUpsert, DedupeKey: fmt.Sprint(name, "-c", i),
				SupersedeKey: fmt.Sprint("credential/", i), Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
			_, err := st.EnqueueCommand(ctx, c)
			require.NoError(b, err)
			recs := make([]store.DeliveryRecord, agents)
			for j, id := range ids {
				recs[j] = store.DeliveryRecord{CommandID: c.ID, AgentID: id, Status: models.DeliveryAcked, At: time.Now(), ResultStatus: "succeeded", PassedOn: true}
			}
			require.NoError(b, st.WriteDeliveries(ctx, recs))
		}
		return cl.ID
	}
	// No credential is rolled out to the clusters, so the desired set is the empty one.
	desired := cluster("reports-desired", store.CredentialChecksum(nil))
	none := cluster("reports-none", "")
	read := func(b *testing.B, id uuid.UUID) {
		for b.Loop() {
			in, err := st.ClusterSyncInputs(ctx, id)
			if err != nil || len(in.Agents) != agents || len(in.CredentialsPending) != 0 {
				b.Fatalf("%d agents, %d with credentials pending: %v", len(in.Agents), len(in.CredentialsPending), err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/check")
	}
	b.Run("agents-report-the-desired-set", func(b *testing.B) { read(b, desired) })
	b.Run("agents-report-none-every-command-counted", func(b *testing.B) { read(b, none) })
}
