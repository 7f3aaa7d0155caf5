package agentgw

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/proto/agentv1"
)

// fakeStream is the send side of an agent stream; Send blocks while block is open.
type fakeStream struct {
	agentv1.AgentService_ConnectServer
	ctx   context.Context
	block chan struct{} // nil: never blocks
	sent  atomic.Int32
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Send(*agentv1.ServerMessage) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-f.ctx.Done():
			return f.ctx.Err()
		}
	}
	f.sent.Add(1)
	return nil
}

// queuedSession is a session holding n heartbeat acks in its queue, its writer not yet run.
func queuedSession(t *testing.T, block chan struct{}, n int) (*session, *fakeStream) {
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	st := &fakeStream{ctx: ctx, block: block}
	s := &session{stream: st, ctx: ctx, cancel: cancel, writing: true}
	for range n {
		s.queue = append(s.queue, outMessage{m: &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_HeartbeatAck{HeartbeatAck: &agentv1.HeartbeatAck{}}}})
	}
	return s, st
}

func TestWriterPoolSendsEverySessionsQueue(t *testing.T) {
	p := newWriterPool()
	var streams []*fakeStream
	var wg sync.WaitGroup
	for i := range 500 {
		s, st := queuedSession(t, nil, 1+i%3)
		streams = append(streams, st)
		wg.Add(1)
		go func() { defer wg.Done(); p.run(s) }()
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		for i, st := range streams {
			if int(st.sent.Load()) != 1+i%3 {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	assert.LessOrEqual(t, p.workers, p.base, "no writer beyond the base without a stall")
	assert.Equal(t, p.workers, p.idle, "every writer is idle once nothing waits")
	assert.Empty(t, p.queue[p.head:])
}

// Streams whose Send blocks (agents that stopped reading) take writers, but the others' messages
// still go out: the pool adds writers when nothing finishes, and drops them afterwards.
func TestWriterPoolStuckStreamsDoNotHoldUpOthers(t *testing.T) {
	p := newWriterPool()
	block := make(chan struct{})
	var stuck []*fakeStream
	for range p.base + 3 {
		s, st := queuedSession(t, block, 1)
		stuck = append(stuck, st)
		p.run(s)
	}
	var healthy []*fakeStream
	for range 200 {
		s, st := queuedSession(t, nil, 1)
		healthy = append(healthy, st)
		p.run(s)
	}
	require.Eventually(t, func() bool {
		for _, st := range healthy {
			if st.sent.Load() != 1 {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond, "healthy streams wait behind stuck ones")
	for _, st := range stuck {
		assert.Zero(t, st.sent.Load())
	}

	close(block)
	require.Eventually(t, func() bool {
		for _, st := range stuck {
			if st.sent.Load() != 1 {
				return false
			}
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.workers <= p.base && p.workers == p.idle
	}, 5*time.Second, 5*time.Millisecond, "the added writers end once nothing waits")
}
