package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Sync is the desired-vs-applied series: how many agents of each cluster are in each sync
// state (labels cluster and state only: agents and publishes never become labels), and how
// many repairs were sent.
//
// A replica counts the agents it holds (and the reporting replica those nobody holds), so the
// cluster's count is the sum over replicas: sum by (cluster, state) (imprun_sync_agents).
type Sync struct {
	Agents  *prometheus.GaugeVec   // cluster, state
	Repairs *prometheus.CounterVec // kind: publish, credentials

	mu    sync.Mutex
	shown map[string]bool // clusters with series
}

// SyncStates are the values of the state label.
var SyncStates = []string{"synced", "progressing", "failed", "drifted", "stale"}

// NewSync registers the sync series in reg.
func NewSync(reg prometheus.Registerer) *Sync {
	s := &Sync{
		Agents: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "imprun_sync_agents",
			Help: "Agents per cluster and sync state (synced, progressing, failed, drifted, stale) that this replica counts, as last computed: the agents it holds, and on one replica those no replica holds; sum over replicas."}, []string{"cluster", "state"}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_sync_repairs_total",
			Help: "Drift repairs sent to agents, by what was sent again (publish, credentials)."}, []string{"kind"}),
	}
	s.shown = map[string]bool{}
	reg.MustRegister(s.Agents, s.Repairs)
	return s
}

// Set records the state counts of one cluster; nil records nothing.
func (s *Sync) Set(cluster string, counts map[string]int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shown[cluster] = true
	for _, st := range SyncStates {
		s.Agents.WithLabelValues(cluster, st).Set(float64(counts[st]))
	}
}

// Retain removes the series of every cluster but those of keep: a replica that no longer
// counts any agent of a cluster must not keep showing its last counts.
func (s *Sync) Retain(keep map[string]bool) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.shown {
		if !keep[c] {
			s.Agents.DeletePartialMatch(prometheus.Labels{"cluster": c})
			delete(s.shown, c)
		}
	}
}

// Repaired counts repairs sent.
func (s *Sync) Repaired(kind string, n int) {
	if s == nil || n <= 0 {
		return
	}
	s.Repairs.WithLabelValues(kind).Add(float64(n))
}
