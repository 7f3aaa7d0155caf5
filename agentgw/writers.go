package agentgw

import (
	"runtime"
	"sync"
	"time"
)

// writerPool runs the sessions' writers (session.write) on a few long-lived goroutines instead
// of a new goroutine per stream and message. A cluster-wide command starts the writers of every
// stream of the cluster at once: 10,000 new goroutines, each growing its stack in grpc's Send,
// cost a broadcast about as much CPU as the gateway's own code for it. A Send of a queued
// message returns as soon as the message is in the transport's buffer, so a handful of writers
// keep up with the whole fan-out.
//
// A Send does block when the stream's write quota is used up (an agent that stopped reading).
// A writer stuck in one must not hold up everyone else's: when no write has finished for
// stallAfter while sessions wait, the pool starts more writers, as many as wait (up to
// maxExtra each time), which end once nothing waits.
type writerPool struct {
	mu       sync.Mutex
	cond     sync.Cond
	queue    []*session // sessions whose writer must run, in order
	head     int        // queue[head:] waits
	workers  int        // running writers, stuck ones included
	idle     int        // writers waiting in cond
	base     int        // writers that stay when nothing waits
	finished uint64     // writes finished (progress, for the stall check)
	checking bool       // a stall check is scheduled
}

// stallAfter is how long waiting sessions may see no write finish before the pool adds
// writers; maxExtra bounds the writers one check adds.
const (
	stallAfter = 50 * time.Millisecond
	maxExtra   = 64
)

func newWriterPool() *writerPool {
	p := &writerPool{base: max(4, 2*runtime.GOMAXPROCS(0))}
	p.cond.L = &p.mu
	return p
}

// run has s's writer run on the pool; the caller has set s.writing.
func (p *writerPool) run(s *session) {
	p.mu.Lock()
	p.queue = append(p.queue, s)
	switch {
	case p.idle > 0:
		p.idle--
		p.cond.Signal()
	case p.workers < p.base:
		p.workers++
		go p.work()
	case !p.checking:
		p.checking = true
		seen := p.finished
		time.AfterFunc(stallAfter, func() { p.check(seen) })
	}
	p.mu.Unlock()
}

// check adds writers when sessions wait and no write finished since seen.
func (p *writerPool) check(seen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	waiting := len(p.queue) - p.head
	if waiting == 0 {
		p.checking = false
		return
	}
	if p.finished == seen {
		for range min(waiting, maxExtra) {
			p.workers++
			go p.work()
		}
	}
	seen = p.finished
	time.AfterFunc(stallAfter, func() { p.check(seen) })
}

// work runs waiting sessions' writers, one at a time; beyond the base number a writer ends when
// nothing waits.
func (p *writerPool) work() {
	p.mu.Lock()
	for {
		for p.head == len(p.queue) {
			if p.workers > p.base {
				p.workers--
				p.mu.Unlock()
				return
			}
			// Nothing waits: let the queue's array go rather than keep its longest length.
			p.queue, p.head = nil, 0
			p.idle++
			p.cond.Wait()
		}
		s := p.queue[p.head]
		p.queue[p.head] = nil
		p.head++
		if p.head >= 1024 && 2*p.head >= len(p.queue) { // a queue that never drains: drop what was taken
			n := copy(p.queue, p.queue[p.head:])
			clear(p.queue[n:])
			p.queue, p.head = p.queue[:n], 0
		}
		p.mu.Unlock()
		s.write()
		p.mu.Lock()
		p.finished++
	}
}
