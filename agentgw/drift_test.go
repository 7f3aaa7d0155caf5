package agentgw_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/models"
)

// The drift check waits its interval, or ten times what its last pass took when that is
// longer: it never takes more than a tenth of the replica's time.
func TestDriftPauseBoundsTheCheck(t *testing.T) {
	require.Equal(t, 10*time.Second, agentgw.DriftPause(10*time.Second, 50*time.Millisecond))
	require.Equal(t, 10*time.Second, agentgw.DriftPause(10*time.Second, time.Second))
	require.Equal(t, 30*time.Second, agentgw.DriftPause(10*time.Second, 3*time.Second))
}

// Each replica counts in imprun_sync_agents the agents it holds, and the replica whose lease
// started first also those no live replica holds: summed over the replicas, every agent of the
// cluster once. A replica left without agents of a cluster shows no series of it.
func TestSyncSeriesCountEveryAgentOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	reg1, reg2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	f := newFixtureWith(t, apitest.Options{Agents: timing, GatewayOptions: []agentgw.Option{agentgw.WithSyncMetrics(metrics.NewSync(reg1))}})
	f.env.WithGatewayOptions(agentgw.WithSyncMetrics(metrics.NewSync(reg2)))
	r1, r2 := f.env.Replica, f.env.StartReplica(t, "127.0.0.1:0")
	connectFleet(t, f, r1, 3)
	on2 := connectFleet(t, f, r2, 2)
	gone := connectFleet(t, f, r1, 1)[0]
	gone.cancel()
	waitStatus(t, f.env, gone.id, models.AgentDisconnected, 10*time.Second)

	// r1 started first: it holds three and reports the disconnected one, stale once its last
	// heartbeat is older than the missed-heartbeat limit.
	within := 20 * time.Second
	requireSeries(t, reg1, f.clusterID, within, func(c map[string]float64, ok bool) bool { return ok && total(c) == 4 && c["stale"] == 1 })
	requireSeries(t, reg2, f.clusterID, within, func(c map[string]float64, ok bool) bool { return ok && total(c) == 2 && c["stale"] == 0 })

	// r2's agents leave: r2 drops the cluster's series and r1 counts them, stale.
	for _, a := range on2 {
		a.cancel()
		waitStatus(t, f.env, a.id, models.AgentDisconnected, 10*time.Second)
	}
	requireSeries(t, reg2, f.clusterID, within, func(_ map[string]float64, ok bool) bool { return !ok })
	requireSeries(t, reg1, f.clusterID, within, func(c map[string]float64, ok bool) bool { return ok && total(c) == 6 && c["stale"] == 3 })
}

// requireSeries waits until cond holds of the imprun_sync_agents values of cluster in reg, by
// state (ok: the cluster has series).
func requireSeries(t *testing.T, reg *prometheus.Registry, cluster string, within time.Duration, cond func(map[string]float64, bool) bool) {
	t.Helper()
	var last map[string]float64
	deadline := time.Now().Add(within)
	for {
		counts, ok := syncSeries(t, reg, cluster)
		if cond(counts, ok) {
			return
		}
		last = counts
		if time.Now().After(deadline) {
			t.Fatalf("imprun_sync_agents of cluster %s after %s: %v", cluster, within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func syncSeries(t *testing.T, reg *prometheus.Registry, cluster string) (map[string]float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	counts, found := map[string]float64{}, false
	for _, mf := range mfs {
		if mf.GetName() != "imprun_sync_agents" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cluster"] == cluster {
				found = true
				counts[labels["state"]] = m.GetGauge().GetValue()
			}
		}
	}
	return counts, found
}

func total(counts map[string]float64) float64 {
	n := 0.0
	for _, v := range counts {
		n += v
	}
	return n
}
