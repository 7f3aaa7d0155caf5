package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imprun/imprun-server/store"
)

// Outcomes are the ends of the platform's long processes, recorded by the worker's activities
// where each outcome is written.
type Outcomes struct {
	Publishes       *prometheus.CounterVec   // outcome: published, failed, timeout, withdrawn
	PublishDuration *prometheus.HistogramVec // outcome
	Rollouts        *prometheus.CounterVec   // outcome: confirmed
	RolloutDuration *prometheus.HistogramVec // action: upsert, revoke
	Subscriptions   *prometheus.CounterVec   // outcome: the status a decision led to
	Queued          *prometheus.CounterVec   // kind: commands put in the outbox
}

var durationBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// NewOutcomes registers the outcome series in reg.
func NewOutcomes(reg prometheus.Registerer) *Outcomes {
	o := &Outcomes{
		Publishes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_publish_outcomes_total",
			Help: "Publish and withdraw runs by the outcome they wrote."}, []string{"outcome"}),
		PublishDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imprun_publish_duration_seconds",
			Help: "Time from a publish run's start to its outcome.", Buckets: durationBuckets}, []string{"outcome"}),
		Rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_credential_rollouts_total",
			Help: "Credential rollouts to a cluster by outcome."}, []string{"outcome"}),
		RolloutDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imprun_credential_rollout_duration_seconds",
			Help: "Time from a credential change being queued for a cluster to the cluster confirming it.", Buckets: durationBuckets}, []string{"action"}),
		Subscriptions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_subscription_transitions_total",
			Help: "Subscription transitions by the status they led to."}, []string{"outcome"}),
	}
	o.Queued = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_agent_commands_queued_total",
		Help: "Agent commands the worker put in the outbox, by kind."}, []string{"kind"})
	reg.MustRegister(o.Publishes, o.PublishDuration, o.Rollouts, o.RolloutDuration, o.Subscriptions, o.Queued)
	return o
}

// Publish records a publish outcome; a nil Outcomes records nothing (tests).
func (o *Outcomes) Publish(outcome string, took time.Duration) {
	if o == nil {
		return
	}
	o.Publishes.WithLabelValues(outcome).Inc()
	if took > 0 {
		o.PublishDuration.WithLabelValues(outcome).Observe(took.Seconds())
	}
}

// Rollout records a cluster confirming a credential change queued took ago.
func (o *Outcomes) Rollout(action string, took time.Duration) {
	if o == nil {
		return
	}
	o.Rollouts.WithLabelValues("confirmed").Inc()
	o.RolloutDuration.WithLabelValues(action).Observe(took.Seconds())
}

// CommandsQueued records n agent commands of kind put in the outbox.
func (o *Outcomes) CommandsQueued(kind string, n int) {
	if o == nil || n <= 0 {
		return
	}
	o.Queued.WithLabelValues(kind).Add(float64(n))
}

// Subscription records a subscription transition.
func (o *Outcomes) Subscription(outcome string) {
	if o == nil {
		return
	}
	o.Subscriptions.WithLabelValues(outcome).Inc()
}

// BacklogCollector exports store.Backlog on every scrape: one statement per scrape, with a
// short timeout so a slow database makes the scrape report the error, not hang.
type BacklogCollector struct {
	Store *store.Store
	Log   *slog.Logger
}

var (
	backlogDescs = map[string]*prometheus.Desc{
		"deploying":     prometheus.NewDesc("imprun_publishes_deploying", "Publishes whose run has not written an outcome yet.", nil, nil),
		"deployingAge":  prometheus.NewDesc("imprun_publish_oldest_deploying_seconds", "Age of the oldest publish still DEPLOYING (0: none).", nil, nil),
		"revocations":   prometheus.NewDesc("imprun_credential_revocations_unconfirmed", "Revocations some cluster has not confirmed yet.", nil, nil),
		"revocationAge": prometheus.NewDesc("imprun_credential_oldest_unconfirmed_revocation_seconds", "Age of the oldest unconfirmed revocation (0: none).", nil, nil),
		"commands":      prometheus.NewDesc("imprun_agent_commands_unacknowledged", "Live agent commands no agent has acknowledged.", nil, nil),
		"commandAge":    prometheus.NewDesc("imprun_agent_command_oldest_unacknowledged_seconds", "Age of the oldest live agent command no agent acknowledged (0: none).", nil, nil),
	}
	clusterAgents = prometheus.NewDesc("imprun_cluster_connected_agents", "Connected agents of each active cluster, as Postgres records them.", []string{"cluster"}, nil)
	backlogUp     = prometheus.NewDesc("imprun_backlog_scrape_ok", "1 when the last backlog read from Postgres worked.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c BacklogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range backlogDescs {
		ch <- d
	}
	ch <- backlogUp
	ch <- clusterAgents
}

// Collect implements prometheus.Collector.
func (c BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b, err := c.Store.ReadBacklog(ctx)
	if err != nil {
		if c.Log != nil {
			c.Log.Warn("backlog metrics: read failed", "err", err)
		}
		ch <- prometheus.MustNewConstMetric(backlogUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(backlogUp, prometheus.GaugeValue, 1)
	for k, v := range map[string]float64{
		"deploying": float64(b.PublishesDeploying), "deployingAge": b.OldestDeployingSeconds,
		"revocations": float64(b.RevocationsUnconfirmed), "revocationAge": b.OldestRevocationSeconds,
		"commands": float64(b.CommandsUnacknowledged), "commandAge": b.OldestUnacknowledgedSeconds,
	} {
		ch <- prometheus.MustNewConstMetric(backlogDescs[k], prometheus.GaugeValue, v)
	}
	for _, c := range b.Clusters {
		ch <- prometheus.MustNewConstMetric(clusterAgents, prometheus.GaugeValue, float64(c.Connected), c.Cluster)
	}
}
