// Package metrics holds the Prometheus series every process exports beyond HTTP: the Temporal
// SDK's own metrics through client_golang, the agent gateway's, and the outcomes of publishes,
// credential rollouts and subscriptions. Labels are bounded (cluster, kind, outcome, reason):
// never a publish id, a key prefix or anything else that grows with use.
package metrics

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
)

// Temporal is a client.MetricsHandler that registers the SDK's counters, gauges and timers in a
// Prometheus registry. The SDK names its series itself (temporal_workflow_completed,
// temporal_activity_execution_latency...); timers become histograms in seconds with the suffix
// _seconds. A series keeps the tag names of its first use; a later use with other tags fills
// the missing ones with "" and drops the extra ones, since Prometheus needs one label set per
// name.
type Temporal struct {
	r    *temporalRegistry
	tags map[string]string
}

type temporalRegistry struct {
	reg        prometheus.Registerer
	mu         sync.Mutex
	counters   map[string]*labelled[*prometheus.CounterVec]
	gauges     map[string]*labelled[*prometheus.GaugeVec]
	histograms map[string]*labelled[*prometheus.HistogramVec]
}

type labelled[V any] struct {
	vec    V
	labels []string
}

var _ client.MetricsHandler = (*Temporal)(nil)

// NewTemporal returns a handler that registers in reg.
func NewTemporal(reg prometheus.Registerer) *Temporal {
	return &Temporal{r: &temporalRegistry{reg: reg,
		counters:   map[string]*labelled[*prometheus.CounterVec]{},
		gauges:     map[string]*labelled[*prometheus.GaugeVec]{},
		histograms: map[string]*labelled[*prometheus.HistogramVec]{},
	}}
}

// WithTags returns a handler whose series carry tags as well.
func (t *Temporal) WithTags(tags map[string]string) client.MetricsHandler {
	merged := make(map[string]string, len(t.tags)+len(tags))
	for k, v := range t.tags {
		merged[k] = v
	}
	for k, v := range tags {
		merged[k] = v
	}
	return &Temporal{r: t.r, tags: merged}
}

// Counter returns the counter name with this handler's tags.
func (t *Temporal) Counter(name string) client.MetricsCounter {
	l := series(t.r, t.r.counters, name, t.tags, func(n string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: n, Help: "Temporal SDK counter " + n}, labels)
	})
	c := l.vec.WithLabelValues(values(l.labels, t.tags)...)
	return counterFunc(func(d int64) { c.Add(float64(d)) })
}

// Gauge returns the gauge name with this handler's tags.
func (t *Temporal) Gauge(name string) client.MetricsGauge {
	l := series(t.r, t.r.gauges, name, t.tags, func(n string, labels []string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: n, Help: "Temporal SDK gauge " + n}, labels)
	})
	g := l.vec.WithLabelValues(values(l.labels, t.tags)...)
	return gaugeFunc(g.Set)
}

// Timer returns the histogram name_seconds with this handler's tags.
func (t *Temporal) Timer(name string) client.MetricsTimer {
	l := series(t.r, t.r.histograms, name+"_seconds", t.tags, func(n string, labels []string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: n, Help: "Temporal SDK timer " + n,
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, labels)
	})
	h := l.vec.WithLabelValues(values(l.labels, t.tags)...)
	return timerFunc(func(d time.Duration) { h.Observe(d.Seconds()) })
}

// series returns the vector of name, registering it with the names of tags on first use.
func series[V prometheus.Collector](r *temporalRegistry, m map[string]*labelled[V], name string, tags map[string]string, mk func(string, []string) V) *labelled[V] {
	name = promName(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := m[name]; ok {
		return l
	}
	labels := make([]string, 0, len(tags))
	for k := range tags {
		labels = append(labels, promName(k))
	}
	sort.Strings(labels)
	v := mk(name, labels)
	if err := r.reg.Register(v); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			v = are.ExistingCollector.(V)
		}
	}
	l := &labelled[V]{vec: v, labels: labels}
	m[name] = l
	return l
}

func values(labels []string, tags map[string]string) []string {
	byName := make(map[string]string, len(tags))
	for k, v := range tags {
		byName[promName(k)] = v
	}
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = byName[l]
	}
	return out
}

// promName makes s a valid Prometheus name: letters, digits and underscores.
func promName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

type counterFunc func(int64)

func (f counterFunc) Inc(d int64) { f(d) }

type gaugeFunc func(float64)

func (f gaugeFunc) Update(v float64) { f(v) }

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }
