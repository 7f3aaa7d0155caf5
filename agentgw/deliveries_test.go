package agentgw

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/testharness"
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

// The writers are busy from a command's fan-out (a sent record waits for its acknowledgement)
// until its acknowledgements are written, and idle again after.
func TestDeliveryShardsBusyUntilWritten(t *testing.T) {
	// The command does not exist: its delivery is dropped as one of a deleted command, which
	// is written as far as the writer is concerned.
	g := &Gateway{store: storetest.Open(t, testharness.Postgres(t).NewDatabase(t)).Store()}
	d := newDeliveryShards(g, 2)
	if d.busy() {
		t.Fatal("busy before anything was sent")
	}
	agent, cmd := uuid.New(), uuid.New()
	d.add(store.DeliveryRecord{CommandID: cmd, AgentID: agent, Status: models.DeliverySent, At: time.Now()})
	if !d.busy() {
		t.Fatal("not busy while a sent record waits for its acknowledgement")
	}
	d.add(store.DeliveryRecord{CommandID: cmd, AgentID: agent, Status: models.DeliveryAcked, At: time.Now()})
	if !d.busy() {
		t.Fatal("not busy while an acknowledgement waits to be written")
	}
	w := d[binary.BigEndian.Uint32(agent[12:])%2]
	w.write(context.Background(), []store.DeliveryRecord{<-w.in})
	if d.busy() {
		t.Fatal("busy after the acknowledgement was written")
	}
}
