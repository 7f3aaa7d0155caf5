// Package temporalclient connects imprun processes to Temporal: a dial that retries with
// backoff and says so in the log, and a holder that lets the api start before Temporal is up
// and report it in /readyz until then.
package temporalclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
)

// Dial connects to Temporal, retrying with exponential backoff until ctx ends or retry has
// passed. Every failed attempt is logged with the reason.
func Dial(ctx context.Context, opts client.Options, retry time.Duration, log *slog.Logger) (client.Client, error) {
	if opts.Logger == nil {
		opts.Logger = sdklog.NewStructuredLogger(log.With("component", "temporal-sdk"))
	}
	deadline := time.Now().Add(retry)
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := client.DialContext(dctx, opts)
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("temporal at %s unreachable after %d attempts: %w", opts.HostPort, attempt, err)
		}
		log.Warn("temporal not reachable yet, retrying", "host_port", opts.HostPort, "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// ErrNotConnected is returned while the first dial has not succeeded yet.
var ErrNotConnected = errors.New("temporal: not connected yet")

// Holder keeps a client that is dialled in the background, so a process can serve its health
// endpoints (and say what is missing) while Temporal is still starting.
type Holder struct {
	c       atomic.Pointer[client.Client]
	lastErr atomic.Pointer[error]
}

// Connect dials in the background until it succeeds or ctx ends.
func (h *Holder) Connect(ctx context.Context, opts client.Options, log *slog.Logger) {
	go func() {
		for ctx.Err() == nil {
			c, err := Dial(ctx, opts, time.Hour, log)
			if err == nil {
				h.c.Store(&c)
				log.Info("connected to temporal", "host_port", opts.HostPort, "namespace", opts.Namespace)
				return
			}
			h.lastErr.Store(&err)
		}
	}()
}

// Set installs an already connected client (tests, worker).
func (h *Holder) Set(c client.Client) { h.c.Store(&c) }

// Client returns the client, or ErrNotConnected.
func (h *Holder) Client() (client.Client, error) {
	if p := h.c.Load(); p != nil {
		return *p, nil
	}
	return nil, ErrNotConnected
}

// Check is a readiness check: Temporal's frontend answers a health request.
func (h *Holder) Check(ctx context.Context) error {
	c, err := h.Client()
	if err != nil {
		return err
	}
	_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
	return err
}

// Close closes the client if it was connected.
func (h *Holder) Close() {
	if p := h.c.Load(); p != nil {
		(*p).Close()
	}
}
