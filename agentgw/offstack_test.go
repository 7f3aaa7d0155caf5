package agentgw

import (
	"sync"
	"testing"
)

// deepStack uses about depth KB of stack, as a database call does (tens of KB).
//
//go:noinline
func deepStack(depth int) byte {
	var pad [1024]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		return pad[0]
	}
	return deepStack(depth-1) + pad[depth%len(pad)]
}

// BenchmarkOffStack is one call of 24 KB of stack off the caller's stack: on a kept goroutine
// (offStack), on a new goroutine each time (offStack before), and on the caller's own stack
// (the floor).
func BenchmarkOffStack(b *testing.B) {
	const depth = 24
	b.Run("kept-goroutine", func(b *testing.B) {
		for b.Loop() {
			offStack(func() { deepStack(depth) })
		}
	})
	b.Run("new-goroutine", func(b *testing.B) {
		for b.Loop() {
			var wg sync.WaitGroup
			wg.Go(func() { deepStack(depth) })
			wg.Wait()
		}
	})
	b.Run("floor-caller-stack", func(b *testing.B) {
		for b.Loop() {
			deepStack(depth)
		}
	})
}

// offStack runs f before it returns, on kept goroutines as on new ones, however many calls
// run at once (more than offStackIdle), and keeps no more than offStackIdle waiting.
func TestOffStackRunsEveryCallBeforeReturning(t *testing.T) {
	var wg sync.WaitGroup
	ran := make([]bool, 4*offStackIdle)
	for i := range ran {
		wg.Go(func() { offStack(func() { deepStack(8); ran[i] = true }) })
	}
	wg.Wait()
	for i, ok := range ran {
		if !ok {
			t.Fatalf("call %d had not run when offStack returned", i)
		}
	}
	if n := offStackWaiting.Load(); n > offStackIdle {
		t.Fatalf("%d goroutines wait for work, more than %d", n, offStackIdle)
	}
}
