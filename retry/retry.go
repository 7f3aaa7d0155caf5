// Package retry is the one backoff of every process: exponential steps with equal jitter, and a
// loop that retries an operation until it works, its context ends or its time is up. It imports
// nothing of the server, so the agent uses it too.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with jitter. The jitter spreads the retries of many clients
// after a server restart, so a replica coming back is not hit by all of them at once.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the delay before the next attempt: the exponential step for this attempt
// (Min * 2^attempt, capped at Max), of which a random half is kept ("equal jitter": never less
// than half the step, so the backoff still grows).
func (b *Backoff) Next() time.Duration {
	step := b.Min
	for i := 0; i < b.attempt && step < b.Max; i++ {
		step *= 2
	}
	step = min(step, b.Max)
	b.attempt++
	half := step / 2
	return half + rand.N(half+1)
}

// Reset starts over after an attempt that worked.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits d, or until ctx ends; it reports whether the whole wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Until calls op until it returns nil, ctx ends, or within has passed since the first call.
// Before each retry it calls onRetry (when not nil) with the attempt that failed, the wait ahead
// and the error, so a process says why it waits. The error after giving up names the number of
// attempts and wraps op's last error.
func Until(ctx context.Context, within time.Duration, b Backoff, op func(ctx context.Context) error, onRetry func(attempt int, wait time.Duration, err error)) error {
	deadline := time.Now().Add(within)
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		wait := b.Next()
		if onRetry != nil {
			onRetry(attempt, wait, err)
		}
		Sleep(ctx, wait)
	}
}
