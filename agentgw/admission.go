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
// it. With slots below the pool's size the rest of the pool stays free for them; a connect
// that finds the queue full is refused at once with Unavailable, and its agent retries after
// its jittered backoff, which spreads the storm instead of piling it up here.
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
