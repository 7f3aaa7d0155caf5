package metrics

import "github.com/prometheus/client_golang/prometheus"

// Sync is the desired-vs-applied series: how many agents of each cluster are in each sync
// state (labels cluster and state only: agents and publishes never become labels), and how
// many repairs were sent.
type Sync struct {
	Agents  *prometheus.GaugeVec   // cluster, state
	Repairs *prometheus.CounterVec // kind: publish, credentials
}

// SyncStates are the values of the state label.
var SyncStates = []string{"synced", "progressing", "failed", "drifted", "stale"}

// NewSync registers the sync series in reg.
func NewSync(reg prometheus.Registerer) *Sync {
	s := &Sync{
		Agents: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "imprun_sync_agents",
			Help: "Agents per cluster and sync state (synced, progressing, failed, drifted, stale), as last computed."}, []string{"cluster", "state"}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_sync_repairs_total",
			Help: "Drift repairs sent to agents, by what was sent again (publish, credentials)."}, []string{"kind"}),
	}
	reg.MustRegister(s.Agents, s.Repairs)
	return s
}

// Set records the state counts of one cluster; nil records nothing.
func (s *Sync) Set(cluster string, counts map[string]int) {
	if s == nil {
		return
	}
	for _, st := range SyncStates {
		s.Agents.WithLabelValues(cluster, st).Set(float64(counts[st]))
	}
}

// Repaired counts repairs sent.
func (s *Sync) Repaired(kind string, n int) {
	if s == nil || n <= 0 {
		return
	}
	s.Repairs.WithLabelValues(kind).Add(float64(n))
}
