package agentgw

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// Every record of one agent goes to the same writer (two statements in flight never touch
// the same row), and a fleet's agents are spread over all of them.
func TestDeliveryShardsKeepAnAgentOnOneWriter(t *testing.T) {
	d := newDeliveryShards(&Gateway{}, 2)
	cmds := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	agents := make([]uuid.UUID, 200)
	for i := range agents {
		agents[i] = uuid.New()
		for _, c := range cmds {
			d.add(store.DeliveryRecord{CommandID: c, AgentID: agents[i], Status: models.DeliverySent, At: time.Now()})
		}
	}
	for _, a := range agents {
		holders := 0
		for _, w := range d {
			n := 0
			for _, c := range cmds {
				if _, ok := w.held[deliveryKey{c, a}]; ok {
					n++
				}
			}
			if n != 0 && n != len(cmds) {
				t.Fatalf("agent %s: a writer holds %d of its %d records", a, n, len(cmds))
			}
			if n > 0 {
				holders++
			}
		}
		if holders != 1 {
			t.Fatalf("agent %s: %d writers hold its records, want 1", a, holders)
		}
	}
	for i, w := range d {
		if len(w.held) < len(agents)*len(cmds)/4 {
			t.Fatalf("writer %d holds %d of %d records: the agents are not spread", i, len(w.held), len(agents)*len(cmds))
		}
	}
}
