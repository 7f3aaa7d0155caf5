package agent

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential reconnect backoff with jitter. The jitter spreads the reconnects of many
// agents after a server restart, so a replica coming back is not hit by all of them at once.
type backoff struct {
	min, max time.Duration
	attempt  int
}

// next returns the delay before the next attempt: the exponential step for this attempt
// (min * 2^attempt, capped at max), of which a random half is kept ("equal jitter": never less
// than half the step, so the backoff still grows).
func (b *backoff) next() time.Duration {
	step := b.min
	for i := 0; i < b.attempt && step < b.max; i++ {
		step *= 2
	}
	step = min(step, b.max)
	b.attempt++
	half := step / 2
	return half + rand.N(half+1)
}

// reset starts over after a connection that worked.
func (b *backoff) reset() { b.attempt = 0 }
