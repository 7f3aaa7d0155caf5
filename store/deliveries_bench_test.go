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
	"github.com/imprun/imprun-server/store/storetest"
)

// BenchmarkWriteDeliveries writes what a broadcast's acknowledgements become: one statement of
// 5,000 acked delivery rows of a new command, one an agent. Beside the store's statement, which
// checks the rows' agents and commands for the whole batch at once, it runs the floor, the same
// rows with no reference check at all, and the statement as it was before migration 00020: the
// same rows checked by the table's foreign keys, a trigger a row and key.
func BenchmarkWriteDeliveries(b *testing.B) {
	const agents = 5000
	for _, side := range []struct {
		name  string
		write func(*store.Store, context.Context, []store.DeliveryRecord) error
		fks   bool
	}{
		{"store", (*store.Store).WriteDeliveries, false},
		{"floor-unchecked", (*store.Store).WriteDeliveriesUnchecked, false},
		{"before-foreign-keys", (*store.Store).WriteDeliveriesUnchecked, true},
	} {
		b.Run(side.name, func(b *testing.B) {
			st, d := newStoreDB(b)
			if side.fks {
				d.AddDeliveryForeignKeys(b)
			}
			ctx := context.Background()
			cl, ids := clusterWithManyAgents(b, st, d, agents)
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				c := &models.AgentCommand{ClusterID: cl, Kind: models.CommandCredentialUpsert, DedupeKey: fmt.Sprint("bench-", i),
					SupersedeKey: fmt.Sprint("credential/", i), Payload: models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: uuid.NewString(), Version: 1})}
				_, err := st.EnqueueCommand(ctx, c)
				require.NoError(b, err)
				now := time.Now()
				recs := make([]store.DeliveryRecord, agents)
				for j, id := range ids {
					recs[j] = store.DeliveryRecord{CommandID: c.ID, AgentID: id, Status: models.DeliveryAcked, At: now,
						SentAt: now.Add(-time.Millisecond), ResultStatus: "succeeded", Result: map[string]any{"success": true}, PassedOn: true}
				}
				b.StartTimer()
				require.NoError(b, side.write(st, ctx, recs))
				b.StopTimer()
				if n := d.CountDeliveries(b, c.ID, models.DeliveryAcked); n != agents {
					b.Fatalf("%d rows written, want %d", n, agents)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/agents/1000, "us/row")
		})
	}
}

// clusterWithManyAgents is a cluster of n (pending) agents, analysed as autovacuum would.
func clusterWithManyAgents(b testing.TB, st *store.Store, d *storetest.DB, n int) (uuid.UUID, []uuid.UUID) {
	ctx := context.Background()
	cl := &models.Cluster{Name: "bench", Region: "r", Status: models.ClusterActive}
	require.NoError(b, st.CreateCluster(ctx, cl))
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	d.InsertPendingAgentsWithIDs(b, cl.ID, ids)
	d.Analyze(b)
	return cl.ID, ids
}
