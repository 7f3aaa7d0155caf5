package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gateway is the agent gateway's series. Per-agent state (connected agents, heartbeat age) is
// read from the gateway's sessions at scrape time through Sessions, so it costs nothing between
// scrapes; the rest are counters and histograms bumped where things happen.
type Gateway struct {
	Commands     *prometheus.CounterVec   // kind, stage: sent, acknowledged
	DeliveryLag  *prometheus.HistogramVec // kind: queued -> acknowledged
	Sessions     *prometheus.CounterVec   // event: opened, closed; reason
	AuthFailures *prometheus.CounterVec   // reason
	ClaimGroups  prometheus.Histogram     // connects whose claims were committed together
}

// SessionStats is what a gateway replica reports per cluster at scrape time.
type SessionStats struct {
	Cluster string
	// Connected is the number of agents with a live stream on this replica.
	Connected int
	// OldestHeartbeat is the age of the oldest last heartbeat among them.
	OldestHeartbeat time.Duration
}

// NewGateway registers the gateway series in reg. replica labels every series this process
// exports (replicas are few; agents and commands never become labels). sessions is called on
// each scrape.
func NewGateway(reg prometheus.Registerer, replica string, sessions func() []SessionStats) *Gateway {
	r := prometheus.WrapRegistererWith(prometheus.Labels{"replica": replica}, reg)
	g := &Gateway{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_agentgw_commands_total",
			Help: "Agent commands sent to agents and acknowledged by them, by kind and stage (the worker counts what it queues in imprun_agent_commands_queued_total)."}, []string{"kind", "stage"}),
		DeliveryLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imprun_agentgw_delivery_lag_seconds",
			Help:    "Time from a command being queued to an agent acknowledging it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600}}, []string{"kind"}),
		Sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_agentgw_sessions_total",
			Help: "Agent streams opened and closed, by reason."}, []string{"event", "reason"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_agentgw_auth_failures_total",
			Help: "Refused agent connects by reason."}, []string{"reason"}),
		ClaimGroups: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "imprun_agentgw_connect_claim_group_size",
			Help:    "Agent connects (JWT) whose claims were committed together in one transaction, per group (1: claimed alone; the sum counts the connects).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64}}),
	}
	r.MustRegister(g.Commands, g.DeliveryLag, g.Sessions, g.AuthFailures, g.ClaimGroups)
	if sessions != nil {
		r.MustRegister(sessionCollector(sessions))
	}
	return g
}

// Command counts n commands of kind reaching stage; nil records nothing.
func (g *Gateway) Command(kind, stage string, n int) {
	if g == nil || g.Commands == nil || n <= 0 {
		return
	}
	g.Commands.WithLabelValues(kind, stage).Add(float64(n))
}

// Acknowledged records an acknowledgement of a command queued at queuedAt.
func (g *Gateway) Acknowledged(kind string, queuedAt time.Time) {
	if g == nil || g.DeliveryLag == nil {
		return
	}
	g.Command(kind, "acknowledged", 1)
	if !queuedAt.IsZero() {
		g.DeliveryLag.WithLabelValues(kind).Observe(time.Since(queuedAt).Seconds())
	}
}

// Session records a stream opening or closing.
func (g *Gateway) Session(event, reason string) {
	if g == nil || g.Sessions == nil {
		return
	}
	g.Sessions.WithLabelValues(event, reason).Inc()
}

// AuthFailure records a refused connect.
func (g *Gateway) AuthFailure(reason string) {
	if g == nil || g.AuthFailures == nil {
		return
	}
	g.AuthFailures.WithLabelValues(reason).Inc()
}

// ClaimGroup records a group of n connects claimed together; nil records nothing.
func (g *Gateway) ClaimGroup(n int) {
	if g == nil || g.ClaimGroups == nil {
		return
	}
	g.ClaimGroups.Observe(float64(n))
}

var (
	connectedDesc = prometheus.NewDesc("imprun_agentgw_connected_agents", "Agents with a live stream on this replica, per cluster.", []string{"cluster"}, nil)
	heartbeatDesc = prometheus.NewDesc("imprun_agentgw_heartbeat_age_seconds", "Age of the oldest last heartbeat among this replica's agents of each cluster.", []string{"cluster"}, nil)
)

type sessionCollector func() []SessionStats

func (c sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectedDesc
	ch <- heartbeatDesc
}

func (c sessionCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c() {
		ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, float64(s.Connected), s.Cluster)
		ch <- prometheus.MustNewConstMetric(heartbeatDesc, prometheus.GaugeValue, s.OldestHeartbeat.Seconds(), s.Cluster)
	}
}
