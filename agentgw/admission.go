package agentgw

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// admission bounds the connects that do their database work at once (slots) and those that
// wait for a slot (queue).
//
// A connect is a transaction or two; a storm of them (a replica restarted, a network come
// back) would otherwise take every connection of the pool and queue behind it, and the
// replica's other writes (an ended stream's disconnect, deliveries, acknowledgements) would
// wait behind the storm until they time out, so agents already connected would be lost to
// it. With slots below the pool's size the rest of the pool stays free for them. A waiting
// connect costs what a connected agent does, and is served the moment a slot frees, while a
// refused one comes back only after its agent's growing backoff (a queue of 1,000 made a
// restarted replica's 19,000 agents take 2.7x the bare floor's time to return); so the queue
// is sized for as much of a restarted replica's fleet as comes back at once (the agents'
// backoff spreads the rest), and only a connect beyond it is refused at once with Unavailable.
type admission struct {
	slots   chan struct{}
	queued  atomic.Int64
	maxWait int64
}

// errBusy is a connect refused by admission.
var errBusy = status.Error(codes.Unavailable, "the agent gateway is busy with other connects; try again")

func newAdmission(slots, queue int) *admission {
	return &admission{slots: make(chan struct{}, max(slots, 1)), maxWait: int64(max(queue, 0))}
}

// enter takes a slot, waiting for one if fewer than the queue's size wait; it returns false
// when the queue is full or ctx ended first. A true enter is followed by one leave.
func (a *admission) enter(ctx context.Context) bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
	}
	if a.queued.Add(1) > a.maxWait {
		a.queued.Add(-1)
		return false
	}
	defer a.queued.Add(-1)
	select {
	case a.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (a *admission) leave() { <-a.slots }
