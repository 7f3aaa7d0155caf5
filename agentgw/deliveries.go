package agentgw

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// deliveryWriter stores delivery changes (sent, acknowledged with result) in batches. A
// collector merges what arrives into the next batch while the previous ones are being written,
// so neither the fan-out of a broadcast nor the agents' acknowledgements ever wait for
// Postgres, and a storm of thousands becomes a few statements: under load each batch holds
// everything that arrived during the previous write (sent records in one statement, then
// acknowledgements in another, so a delivery keeps both times). Acknowledged results are
// passed on only after their batch committed.
type deliveryWriter struct {
	g    *Gateway
	in   chan store.DeliveryRecord
	once sync.Once
	done chan struct{}

	// Sent records wait up to sentHold for their acknowledgement: most agents answer within
	// it, and the delivery is then written once (acked, with its sent_at) instead of twice.
	// What is not acknowledged in time is written as sent.
	heldMu    sync.Mutex
	held      map[deliveryKey]store.DeliveryRecord
	heldOrder []deliveryKey

	// unwritten counts the records handed to the collector and not written yet (see busy).
	unwritten atomic.Int64
}

type deliveryKey struct{ command, agent uuid.UUID }

// sentHold is how long a sent record waits for its acknowledgement before it is written
// alone; the "delivered to agent X" line of a timeline may appear that much later.
const sentHold = 2 * time.Second

const (
	// deliveryBatch bounds the rows of one statement (one transaction's row locks, and
	// how long the next batch waits behind it).
	deliveryBatch = 5000
	// deliveryDelay is how long a record may wait for others to share its statement.
	deliveryDelay = 5 * time.Millisecond
	// deliveryPending bounds what waits in memory; beyond it add blocks (back pressure).
	deliveryPending = 100000
)

// deliveryShards spreads delivery records over independent writers by agent, each with its
// own batches and statements in flight (deliveryInFlight), so that a gateway whose writer
// falls behind the acknowledgements (one writer is one Postgres backend, one core) can run
// more (see deliveryWriters). The records of one
// delivery (one agent) always go to the same writer, so the statements of two writers never
// touch the same row.
type deliveryShards []*deliveryWriter

// deliveryWriters is how many writers a gateway runs. Two were needed while Postgres checked
// the foreign keys of each delivery row alone (27-30 us a row); since migration 00020 checks a
// batch at once a row costs half that, one backend keeps up with the acknowledgements, and one
// writer's bigger batches cost Postgres fewer transactions: on four replicas, 246 against 571
// for a 20,000-agent broadcast, and it was durable sooner (1.17x its floor against 1.47x).
const deliveryWriters = 1

func newDeliveryShards(g *Gateway, n int) deliveryShards {
	d := make(deliveryShards, n)
	for i := range d {
		d[i] = newDeliveryWriter(g)
	}
	return d
}

func (d deliveryShards) add(r store.DeliveryRecord) {
	d[binary.BigEndian.Uint32(r.AgentID[12:])%uint32(len(d))].add(r)
}

// run runs every writer until ctx ends or stop; it returns once each has written what it held.
func (d deliveryShards) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range d {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
}

// busy says whether a writer has records in hand: sent ones waiting for their
// acknowledgement, or any not written yet. It is true from a command's fan-out until its
// acknowledgements are stored.
func (d deliveryShards) busy() bool {
	for _, w := range d {
		if w.unwritten.Load() > 0 {
			return true
		}
		w.heldMu.Lock()
		n := len(w.held)
		w.heldMu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

func (d deliveryShards) stop() {
	for _, w := range d {
		w.stop()
	}
}

func newDeliveryWriter(g *Gateway) *deliveryWriter {
	return &deliveryWriter{g: g, in: make(chan store.DeliveryRecord, 16384), done: make(chan struct{}), held: map[deliveryKey]store.DeliveryRecord{}}
}

func (w *deliveryWriter) add(r store.DeliveryRecord) {
	k := deliveryKey{r.CommandID, r.AgentID}
	w.heldMu.Lock()
	if r.Status == models.DeliverySent {
		if _, dup := w.held[k]; !dup {
			w.held[k] = r
			w.heldOrder = append(w.heldOrder, k)
		}
		w.heldMu.Unlock()
		return
	}
	if h, ok := w.held[k]; ok {
		delete(w.held, k)
		r.SentAt = h.At
	}
	w.heldMu.Unlock()
	w.enqueue(r)
}

// releaseHeld hands the sent records older than cutoff (all of them with a zero cutoff) to
// the collector.
func (w *deliveryWriter) releaseHeld(cutoff time.Time) {
	w.heldMu.Lock()
	var out []store.DeliveryRecord
	i := 0
	for ; i < len(w.heldOrder); i++ {
		k := w.heldOrder[i]
		r, ok := w.held[k]
		if !ok {
			continue // acknowledged meanwhile
		}
		if !cutoff.IsZero() && r.At.After(cutoff) {
			break
		}
		delete(w.held, k)
		out = append(out, r)
	}
	w.heldOrder = append(w.heldOrder[:0], w.heldOrder[i:]...)
	w.heldMu.Unlock()
	for _, r := range out {
		w.enqueue(r)
	}
}

func (w *deliveryWriter) enqueue(r store.DeliveryRecord) {
	w.unwritten.Add(1)
	select {
	case w.in <- r:
	case <-w.done:
		// Shutting down: write it alone rather than lose an acknowledgement.
		_ = w.g.store.WriteDeliveries(context.Background(), []store.DeliveryRecord{r})
		w.unwritten.Add(-1)
	}
}

// stop makes run write the held sent records and everything queued, and return.
func (w *deliveryWriter) stop() {
	w.once.Do(func() {
		w.releaseHeld(time.Time{})
		close(w.done)
	})
}

// pendingDeliveries is the next batch, in arrival order.
type pendingDeliveries struct {
	recs    []store.DeliveryRecord
	firstAt time.Time
}

func (p *pendingDeliveries) add(r store.DeliveryRecord) {
	if len(p.recs) == 0 {
		p.firstAt = time.Now()
	}
	p.recs = append(p.recs, r)
}

// take removes and returns up to n records, oldest first.
func (p *pendingDeliveries) take(n int) []store.DeliveryRecord {
	n = min(n, len(p.recs))
	out := append([]store.DeliveryRecord(nil), p.recs[:n]...)
	p.recs = append(p.recs[:0], p.recs[n:]...)
	p.firstAt = time.Now()
	return out
}

// deliveryInFlight is how many batches of one writer may be in flight at once. With one, what
// arrived during a write waited for it to end: the last acknowledgements of a broadcast waited
// for the batch before them and then for their own, two statements of a Postgres starved of
// CPU by the broadcast itself. Two statements in flight upsert their rows in the same order
// (WriteDeliveries sorts them), so they cannot deadlock, and a delivery's later record wins
// whichever commits first (an acknowledgement is never undone by a sent record).
const deliveryInFlight = 2

func (w *deliveryWriter) run(ctx context.Context) {
	batches := make(chan []store.DeliveryRecord, deliveryInFlight)
	free := make(chan struct{}, deliveryInFlight)
	var writers sync.WaitGroup
	for range deliveryInFlight {
		writers.Go(func() {
			for b := range batches {
				w.write(ctx, b)
				select {
				case free <- struct{}{}:
				default: // shutting down: nobody counts
				}
			}
		})
	}
	p := &pendingDeliveries{}
	busy := 0 // batches in flight
	heldTick := time.NewTicker(sentHold / 10)
	defer heldTick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		if n := len(p.recs); n > 0 && busy < deliveryInFlight {
			wait := time.Until(p.firstAt.Add(deliveryDelay))
			if n >= deliveryBatch || wait <= 0 {
				batches <- p.take(deliveryBatch) // never blocks: a writer is free
				busy++
				continue
			}
			wake.Reset(wait)
		}
		var in <-chan store.DeliveryRecord
		if len(p.recs) < deliveryPending {
			in = w.in
		}
		select {
		case r := <-in:
			p.add(r)
		case <-free:
			busy--
		case now := <-heldTick.C:
			// Not inline: releasing enqueues into w.in, which this loop itself drains.
			go w.releaseHeld(now.Add(-sentHold))
		case <-wake.C:
		case <-w.done:
			for {
				select {
				case r := <-w.in:
					p.add(r)
					continue
				default:
				}
				break
			}
			for len(p.recs) > 0 {
				batches <- p.take(deliveryBatch)
			}
			close(batches)
			writers.Wait()
			return
		}
	}
}

func (w *deliveryWriter) write(ctx context.Context, batch []store.DeliveryRecord) {
	defer w.unwritten.Add(-int64(len(batch)))
	// The batch is this writer's own: its acknowledgements are moved to its front, in order, and
	// only the sent records (few: most are folded into their acknowledgement) are copied out.
	var sent []store.DeliveryRecord
	n := 0
	for i := range batch {
		if batch[i].Status == models.DeliveryAcked {
			batch[n] = batch[i]
			n++
		} else {
			sent = append(sent, batch[i])
		}
	}
	acked := batch[:n]
	// Every acknowledgement carries its command from the stream that sent it, so nothing is
	// read back to pass its result on; a record without one is left to the sweeper, which
	// reads the commands with the results. A result with nobody to go to is stored as passed
	// on (resultSettler).
	results := w.g.toPassOn(acked)
	// Sent first: an acknowledgement in the same batch then finds its row and keeps sent_at.
	w.writeRecords(ctx, sent)
	if !w.writeRecords(ctx, acked) || len(results) == 0 {
		return
	}
	// Passing on talks to Temporal; it must not hold up the next batch.
	go w.g.passOn(ctx, results)
}

// writeRecords writes records in one statement, retrying a few times; false when they are lost.
func (w *deliveryWriter) writeRecords(ctx context.Context, recs []store.DeliveryRecord) bool {
	if len(recs) == 0 {
		return false
	}
	for attempt := 0; ; attempt++ {
		err := w.g.store.WriteDeliveries(ctx, recs)
		if err == nil {
			return true
		}
		if attempt >= 5 || ctx.Err() != nil {
			// Acknowledged commands stay pending in the outbox; the agents get them again on
			// their next connection and answer again (they deduplicate by command id).
			w.g.log.Error("delivery batch lost after retries", "records", len(recs), "err", err)
			return false
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
}
