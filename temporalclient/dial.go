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
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"

	"github.com/imprun/imprun-server/retry"
	"github.com/imprun/imprun-server/tracing"
	sdklog "go.temporal.io/sdk/log"
)

// Dial connects to Temporal, retrying with exponential backoff until ctx ends or within has
// passed. Every failed attempt is logged with the reason.
func Dial(ctx context.Context, opts client.Options, within time.Duration, log *slog.Logger) (client.Client, error) {
	if opts.Logger == nil {
		opts.Logger = sdklog.NewStructuredLogger(log.With("component", "temporal-sdk"))
	}
	var c client.Client
	err := retry.Until(ctx, within, retry.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}, func(ctx context.Context) error {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		c, err = client.DialContext(dctx, opts)
		return err
	}, func(attempt int, wait time.Duration, err error) {
		log.Warn("temporal not reachable yet, retrying", "host_port", opts.HostPort, "attempt", attempt, "backoff", wait, "err", err)
	})
	if err != nil {
		return nil, fmt.Errorf("temporal at %s unreachable: %w", opts.HostPort, err)
	}
	return c, nil
}

// Compression returns the gRPC compression of a client for the temporal.grpc_compression
// setting: "none" (the default) or "gzip". The SDK gzips every request unless told otherwise,
// and the server then answers in gzip too; the control plane's requests and answers are a few
// hundred bytes, so that was CPU on both sides for nothing: in the publish benchmark about a
// tenth of what the control plane's process spent. A Temporal reached over a slow link (a
// cloud namespace) may be worth gzip.
func Compression(setting string) (client.GrpcCompression, error) {
	switch setting {
	case "", "none":
		return &client.GrpcCompressionNone{}, nil
	case "gzip":
		return &client.GrpcCompressionGzip{}, nil
	}
	return nil, fmt.Errorf("temporal.grpc_compression %q: none or gzip", setting)
}

// Source hands out the workflow client, or says Temporal is not reachable (ErrNotConnected):
// what the domain packages start and signal workflows through. A Holder is one.
type Source interface {
	Client() (client.Client, error)
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

// Interceptors are the client interceptors of imprun's Temporal clients: with tracing on
// (package tracing), the OpenTelemetry interceptor, which carries the caller's span into the
// workflow and activity headers; the workers built on such a client use it too, so a REST
// request, its workflow and the activities share one trace. Nil with tracing off: no headers
// and no spans. It never adds workflow commands, so histories replay unchanged.
func Interceptors() []interceptor.ClientInterceptor {
	if !tracing.Enabled() {
		return nil
	}
	i, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{TextMapPropagator: tracing.Propagator})
	if err != nil {
		return nil // only fails on invalid options, which these are not
	}
	return []interceptor.ClientInterceptor{i}
}
