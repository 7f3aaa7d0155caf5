package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTemporalHandlerRegistersSeriesWithTags(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := NewTemporal(reg).WithTags(map[string]string{"namespace": "default", "task_queue": "imprun"})
	h.WithTags(map[string]string{"workflow_type": "PublishWorkflow"}).Counter("temporal_workflow_completed").Inc(2)
	// Another use of the same name with different tags: the missing label is "", the extra dropped.
	h.WithTags(map[string]string{"activity_type": "x"}).Counter("temporal_workflow_completed").Inc(1)
	h.Gauge("temporal_worker_task_slots_available").Update(7)
	h.Timer("temporal_activity_execution_latency").Record(30 * time.Millisecond)

	got := gathered(t, reg)
	want := map[string]float64{
		`temporal_workflow_completed{namespace="default",task_queue="imprun",workflow_type="PublishWorkflow"}`: 2,
		`temporal_workflow_completed{namespace="default",task_queue="imprun",workflow_type=""}`:                1,
		`temporal_worker_task_slots_available{namespace="default",task_queue="imprun"}`:                        7,
		`temporal_activity_execution_latency_seconds{namespace="default",task_queue="imprun"}`:                 1, // one observation
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (gathered %v)", k, got[k], v, got)
		}
	}
}

// gathered flattens reg into "name{labels}" -> value (a histogram's value is its count).
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, lp := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += lp.GetName() + `="` + lp.GetValue() + `"`
			}
			key += "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
