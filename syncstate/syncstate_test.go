package syncstate

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

var limits = Limits{Grace: 2 * time.Second, StaleAfter: 5 * time.Second, MaxRepairs: 3}

// world is one cluster whose publishes p0..p(n-1) are desired at revision 2, each command
// acknowledged by every agent 10 s before now.
type world struct {
	in  store.SyncInputs
	now time.Time
}

func newWorld(agents, publishes int) *world {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := &world{now: now, in: store.SyncInputs{Cluster: models.Cluster{ID: uuid.New(), DriftPolicy: models.DriftRepair}}}
	acked := now.Add(-10 * time.Second)
	for i := 0; i < agents; i++ {
		hb := now.Add(-time.Second)
		a := models.Agent{ID: uuid.New(), Name: fmt.Sprintf("agent-%d", i), Status: models.AgentConnected, LastHeartbeatAt: &hb}
		w.in.Agents = append(w.in.Agents, a)
	}
	for p := 0; p < publishes; p++ {
		d := store.DeployIntent{CommandID: uuid.New(), PublishID: fmt.Sprintf("p%d", p), Revision: 2, Checksum: fmt.Sprintf("sum-%d", p),
			Action: models.DeployApply, CreatedAt: now.Add(-time.Minute)}
		w.in.Deploys = append(w.in.Deploys, d)
		for i := range w.in.Agents {
			a := &w.in.Agents[i]
			w.in.Deliveries = append(w.in.Deliveries, store.DeployDelivery{CommandID: d.CommandID, AgentID: a.ID,
				Status: models.DeliveryAcked, AckedAt: &acked, ResultStatus: "succeeded"})
			a.Applied.V = append(a.Applied.V, models.AppliedRevision{PublishID: d.PublishID, Revision: 2, Checksum: d.Checksum})
		}
	}
	return w
}

func TestComputeStates(t *testing.T) {
	w := newWorld(5, 2)
	ag := w.in.Agents
	ag[1].Applied.V[0].Checksum = "edited"                                                                 // drifted: another checksum
	ag[2].Applied.V = ag[2].Applied.V[1:]                                                                  // drifted: p0 missing
	old := w.now.Add(-time.Minute)                                                                         //
	ag[3].LastHeartbeatAt = &old                                                                           // stale, never synced
	ag[4].Applied.V = append(ag[4].Applied.V, models.AppliedRevision{PublishID: "elsewhere", Revision: 1}) // ignored
	// A refused revision on agent 0 for a third publish: failed, with the agent's words.
	p2 := store.DeployIntent{CommandID: uuid.New(), PublishID: "p2", Revision: 1, Checksum: "s", Action: models.DeployApply, CreatedAt: w.now.Add(-time.Minute)}
	w.in.Deploys = append(w.in.Deploys, p2)
	acked := w.now.Add(-10 * time.Second)
	w.in.Deliveries = append(w.in.Deliveries, store.DeployDelivery{CommandID: p2.CommandID, AgentID: ag[0].ID, Status: models.DeliveryAcked,
		AckedAt: &acked, ResultStatus: "failed", Message: "nginx -t: bad directive"})
	for _, a := range ag[1:] {
		// p2 is in flight (sent, unanswered) everywhere else.
		w.in.Deliveries = append(w.in.Deliveries, store.DeployDelivery{CommandID: p2.CommandID, AgentID: a.ID, Status: models.DeliverySent})
	}

	cs := Compute(w.in, w.now, limits)
	byName := map[string]AgentSync{}
	for _, a := range cs.Agents {
		byName[a.Name] = a
	}
	pub := func(a AgentSync, id string) PublishSync {
		for _, p := range a.Publishes {
			if p.PublishID == id {
				return p
			}
		}
		t.Fatalf("%s has no row for %s", a.Name, id)
		return PublishSync{}
	}
	if p := pub(byName["agent-0"], "p2"); p.State != Failed || p.Message != "nginx -t: bad directive" {
		t.Errorf("refused revision: %+v", p)
	}
	if p := pub(byName["agent-0"], "p0"); p.State != Synced {
		t.Errorf("agent-0 p0: %+v", p)
	}
	if p := pub(byName["agent-1"], "p2"); p.State != Progressing {
		t.Errorf("in flight: %+v", p)
	}
	if p := pub(byName["agent-1"], "p0"); p.State != Drifted {
		t.Errorf("other checksum: %+v", p)
	}
	if p := pub(byName["agent-2"], "p0"); p.State != Drifted || p.AppliedRevision != nil {
		t.Errorf("missing: %+v", p)
	}
	if a := byName["agent-3"]; a.State != Stale || a.Live || pub(a, "p0").State != Stale {
		t.Errorf("an agent without heartbeats must be stale, never synced: %+v", a)
	}
	if a := byName["agent-4"]; len(a.Ignored) != 1 || a.Ignored[0].PublishID != "elsewhere" {
		t.Errorf("a report of another cluster's publish is ignored: %+v", a.Ignored)
	}
	if cs.Healthy || cs.Counts.Stale != 1 || cs.Counts.Failed != 1 {
		t.Errorf("counts %+v healthy %v", cs.Counts, cs.Healthy)
	}

	// Within the grace period after an acknowledgement, a revision not yet in the heartbeat is
	// progressing, not drifted.
	recent := w.now.Add(-time.Second)
	for i := range w.in.Deliveries {
		w.in.Deliveries[i].AckedAt = &recent
	}
	cs = Compute(w.in, w.now, limits)
	for _, a := range cs.Agents {
		if a.Name == "agent-2" && pub(a, "p0").State != Progressing {
			t.Errorf("within the grace period: %+v", pub(a, "p0"))
		}
	}
}

// BenchmarkCompute is the server's CPU for one sync check of a cluster of 1,000 agents with 100
// publishes each (what the drift loop computes per cluster and interval), beside the floor of
// merely walking the same applied sets once.
func BenchmarkCompute(b *testing.B) {
	w := newWorld(1000, 100)
	b.Run("compute", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cs := Compute(w.in, w.now, limits)
			if cs.Counts.Synced != 1000 {
				b.Fatalf("counts %+v", cs.Counts)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "us/agent")
	})
	b.Run("floor-walk", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n := 0
			for _, a := range w.in.Agents {
				for _, r := range a.Applied.V {
					n += r.Revision
				}
			}
			if n == 0 {
				b.Fatal("nothing walked")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "us/agent")
	})
}

// ByAgent finds every agent Agent finds, the same state, and nothing else.
func TestByAgentIndexesEveryAgent(t *testing.T) {
	w := newWorld(5, 2)
	cs := Compute(w.in, w.now, limits)
	idx := cs.ByAgent()
	if len(idx) != len(w.in.Agents) {
		t.Fatalf("ByAgent holds %d agents, the cluster %d", len(idx), len(w.in.Agents))
	}
	for _, a := range w.in.Agents {
		want, ok := cs.Agent(a.ID)
		got, found := idx[a.ID]
		if !ok || !found {
			t.Fatalf("agent %s: Agent found %v, ByAgent found %v", a.Name, ok, found)
		}
		if got.AgentID != a.ID || got.Name != want.Name || got.State != want.State || len(got.Publishes) != len(want.Publishes) {
			t.Fatalf("agent %s: ByAgent says %+v, Agent %+v", a.Name, *got, want)
		}
	}
	if _, ok := idx[uuid.New()]; ok {
		t.Fatal("ByAgent found an agent the cluster does not have")
	}
	if _, ok := cs.Agent(uuid.New()); ok {
		t.Fatal("Agent found an agent the cluster does not have")
	}
}
