package agentgw

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// deliveryWriter stores delivery changes (sent, acknowledged with result) in batches: one
// statement for everything that arrived within a few milliseconds, so a broadcast to
// thousands of agents costs a handful of writes. Acknowledged results are passed on only
// after their batch committed.
type deliveryWriter struct {
	g    *Gateway
	in   chan store.DeliveryRecord
	once sync.Once
	done chan struct{}
}

const (
	deliveryBatch = 1000
	deliveryDelay = 5 * time.Millisecond
)

func newDeliveryWriter(g *Gateway) *deliveryWriter {
	return &deliveryWriter{g: g, in: make(chan store.DeliveryRecord, 16384), done: make(chan struct{})}
}

func (w *deliveryWriter) add(r store.DeliveryRecord) {
	select {
	case w.in <- r:
	case <-w.done:
		// Shutting down: write it alone rather than lose an acknowledgement.
		_ = w.g.store.WriteDeliveries(context.Background(), []store.DeliveryRecord{r})
	}
}

// stop makes run drain what is queued and return.
func (w *deliveryWriter) stop() { w.once.Do(func() { close(w.done) }) }

func (w *deliveryWriter) run(ctx context.Context) {
	batch := make([]store.DeliveryRecord, 0, deliveryBatch)
	for {
		select {
		case r := <-w.in:
			batch = append(batch[:0], r)
		case <-w.done:
			batch = batch[:0] // what it held was written already
			for {
				select {
				case r := <-w.in:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			w.write(ctx, batch)
			return
		}
		timer := time.NewTimer(deliveryDelay)
	fill:
		for len(batch) < deliveryBatch {
			select {
			case r := <-w.in:
				batch = append(batch, r)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		w.write(ctx, batch)
	}
}

func (w *deliveryWriter) write(ctx context.Context, batch []store.DeliveryRecord) {
	if len(batch) == 0 {
		return
	}
	for attempt := 0; ; attempt++ {
		err := w.g.store.WriteDeliveries(ctx, batch)
		if err == nil {
			break
		}
		if attempt >= 5 || ctx.Err() != nil {
			// The acknowledged commands stay pending in the outbox; the agents get them again
			// on their next connection and answer again (they deduplicate by command id).
			w.g.log.Error("delivery batch lost after retries", "records", len(batch), "err", err)
			return
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	var acked []store.DeliveryRecord
	for _, r := range batch {
		if r.Status == models.DeliveryAcked {
			acked = append(acked, r)
		}
	}
	if len(acked) == 0 {
		return
	}
	// Passing on talks to Temporal; it must not hold up the next batch. A broadcast's acks
	// share one command: it is loaded once per batch, not once per agent.
	go func() {
		cmds := map[uuid.UUID]*models.AgentCommand{}
		results := make([]store.UnpassedResult, 0, len(acked))
		for _, r := range acked {
			c, seen := cmds[r.CommandID]
			if !seen {
				if got, err := w.g.store.GetCommand(ctx, r.CommandID); err == nil {
					c = &got
				}
				cmds[r.CommandID] = c
			}
			if c == nil {
				continue // the sweeper retries
			}
			results = append(results, store.UnpassedResult{CommandID: r.CommandID, ClusterID: c.ClusterID, AgentID: r.AgentID, Kind: c.Kind, Payload: c.Payload,
				ResultStatus: r.ResultStatus, Result: r.Result, AckedAt: r.At})
		}
		w.g.passOn(ctx, results)
	}()
}
