package agent

import (
	"sync"
)

// maxConcurrentDeploys bounds how many deploy commands of the files data plane run at once.
// A deploy is mostly waiting (the snapshot download, fsyncs), so one at a time made the agent
// the bottleneck of a cluster's publishes: 32 publishes in flight queued behind each other on
// the stream's goroutine, about 0.15x the throughput Temporal alone allows.
const maxConcurrentDeploys = 8

// deployRunner runs the deploy commands of one stream concurrently, the commands of one
// publish in the order they came (an apply and the withdraw after it must not overtake each
// other). Credential commands exclude deploys (barrier): a deploy renders the credential file
// of its publish, and a credential change re-renders every applied publish's, so the two must
// not interleave or a publish could keep a stale credential file.
type deployRunner struct {
	slots chan struct{}
	wg    sync.WaitGroup
	// barrier: deploys hold it shared, credential commands exclusively.
	barrier sync.RWMutex

	mu      sync.Mutex
	pending map[string][]func() // publish id -> commands waiting behind the running one
}

func newDeployRunner() *deployRunner {
	return &deployRunner{slots: make(chan struct{}, maxConcurrentDeploys), pending: map[string][]func(){}}
}

// submit runs fn after the earlier commands of the same publish, with at most
// maxConcurrentDeploys running at once.
func (r *deployRunner) submit(publishID string, fn func()) {
	r.mu.Lock()
	if q, busy := r.pending[publishID]; busy {
		r.pending[publishID] = append(q, fn)
		r.mu.Unlock()
		return
	}
	r.pending[publishID] = nil
	r.mu.Unlock()
	r.wg.Add(1)
	go r.drain(publishID, fn)
}

// drain runs fn and then every command queued behind it for the publish.
func (r *deployRunner) drain(publishID string, fn func()) {
	defer r.wg.Done()
	for fn != nil {
		r.slots <- struct{}{}
		r.barrier.RLock()
		fn()
		r.barrier.RUnlock()
		<-r.slots
		r.mu.Lock()
		if q := r.pending[publishID]; len(q) > 0 {
			fn, r.pending[publishID] = q[0], q[1:]
		} else {
			fn = nil
			delete(r.pending, publishID)
		}
		r.mu.Unlock()
	}
}

// exclusive runs fn while no deploy runs.
func (r *deployRunner) exclusive(fn func() error) error {
	r.barrier.Lock()
	defer r.barrier.Unlock()
	return fn()
}

// wait returns once every submitted command has run.
func (r *deployRunner) wait() { r.wg.Wait() }
