package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// agentMetrics are the agent's own series, served on MetricsListen: deploys applied by outcome,
// how long nginx takes to load a new generation, and the verifier's decisions by reason. Labels
// are bounded: outcomes and the verifier's fixed reasons, never a publish or credential id.
type agentMetrics struct {
	reg       *prometheus.Registry
	applies   *prometheus.CounterVec
	reload    prometheus.Histogram
	decisions *prometheus.CounterVec
}

func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_agent_applies_total",
			Help: "Deploy commands answered, by outcome (succeeded, failed)."}, []string{"outcome"}),
		reload: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "imprun_agent_reload_duration_seconds",
			Help:    "Time to apply one batch to nginx: write, nginx -t, reload and confirm the new generation serves.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imprun_agent_verifier_decisions_total",
			Help: "Credential verifier decisions, by decision (allowed, denied) and reason."}, []string{"decision", "reason"}),
	}
	m.reg.MustRegister(m.applies, m.reload, m.decisions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *agentMetrics) deployed(res *agentv1.DeployResult) {
	if m == nil || res == nil {
		return
	}
	outcome := "succeeded"
	if res.GetStatus() != agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED {
		outcome = "failed"
	}
	m.applies.WithLabelValues(outcome).Inc()
}

func (m *agentMetrics) reloaded(took time.Duration) {
	if m != nil {
		m.reload.Observe(took.Seconds())
	}
}

func (m *agentMetrics) decided(d Decision) {
	if m == nil {
		return
	}
	if d.Allowed {
		m.decisions.WithLabelValues("allowed", "").Inc()
		return
	}
	m.decisions.WithLabelValues("denied", string(d.Reason)).Inc()
}

// serveMetrics serves /metrics on MetricsListen until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context, wg *sync.WaitGroup) (stop func(), err error) {
	l, err := net.Listen("tcp", a.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("agent: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics endpoint", "err", err)
		}
	}()
	a.log.Info("metrics listening", "addr", l.Addr().String())
	a.metricsAddr.Store(l.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// MetricsAddr is the address /metrics is served on (empty until it listens, or when off).
func (a *Agent) MetricsAddr() string {
	s, _ := a.metricsAddr.Load().(string)
	return s
}
