package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndCaps(t *testing.T) {
	b := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	steps := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, step := range steps {
		if d := b.Next(); d < step/2 || d > step {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, d, step/2, step)
		}
	}
	b.Reset()
	if d := b.Next(); d > 500*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestUntilRetriesThenSucceeds(t *testing.T) {
	calls, retries := 0, 0
	err := Until(context.Background(), time.Minute, Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}, func(attempt int, _ time.Duration, err error) {
		retries++
		if attempt != retries || err == nil {
			t.Errorf("onRetry(%d, %v) on retry %d", attempt, err, retries)
		}
	})
	if err != nil || calls != 3 || retries != 2 {
		t.Fatalf("err %v, calls %d, retries %d", err, calls, retries)
	}
}

func TestUntilGivesUpWithTheLastError(t *testing.T) {
	down := errors.New("down")
	err := Until(context.Background(), 20*time.Millisecond, Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, func(context.Context) error { return down }, nil)
	if !errors.Is(err, down) {
		t.Fatalf("got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err = Until(ctx, time.Hour, Backoff{Min: time.Second, Max: time.Second}, func(context.Context) error { calls++; return down }, nil)
	if !errors.Is(err, down) || calls != 1 {
		t.Fatalf("cancelled: err %v after %d calls", err, calls)
	}
}
