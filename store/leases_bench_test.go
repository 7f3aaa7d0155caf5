package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/store"
)

// BenchmarkStaleSweep is one replica's crash sweep (every heartbeat interval, on every replica)
// of an idle fleet: 20,000 connected agents held by four replicas whose leases are all live, so
// nothing is stale. Beside it, the floor: renewing the replica's lease, the one row an idle
// replica writes each interval.
func BenchmarkStaleSweep(b *testing.B) {
	const agents, replicas = 20000, 4
	st, d := newStoreDB(b)
	ctx := context.Background()
	cluster := uuid.MustParse(d.InsertCluster(b, "kr-1", "kr", `{}`))
	now := time.Now().UTC()
	leases := make([]store.GatewayLease, replicas)
	for i := range leases {
		leases[i] = store.GatewayLease{ReplicaID: uuid.New(), Name: fmt.Sprint("replica-", i), StartedAt: now, AliveAt: now}
		_, err := st.RenewLease(ctx, leases[i])
		require.NoError(b, err)
		d.InsertConnectedAgents(b, cluster, leases[i].ReplicaID, fmt.Sprint("r", i, "-"), agents/replicas, now)
	}
	d.Analyze(b)
	self := leases[0].ReplicaID
	b.Run("sweep", func(b *testing.B) {
		for b.Loop() {
			marked, err := st.MarkStaleAgentsDisconnected(ctx, self, time.Now().Add(-time.Minute), "swept")
			if err != nil || len(marked) != 0 {
				b.Fatalf("marked %d agents of live replicas: %v", len(marked), err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/sweep")
	})
	b.Run("floor-renew-lease", func(b *testing.B) {
		l := leases[0]
		for b.Loop() {
			l.AliveAt = time.Now()
			if _, err := st.RenewLease(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/sweep")
	})
}
