package agent

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
)

// The agent waits between two attempts to open its stream, and the gRPC channel under the
// stream waits between two attempts to open its connection. Left to its defaults, the channel
// waits 1 s after the first failure and up to 120 s after many, whatever the agent was
// configured with, and the agent's own wait came on top: an attempt made while the channel
// was between two connection attempts failed at once, and the agent slept its whole backoff
// even when the channel connected a moment later: the longer a replica was down, the longer
// its agents stayed away after it was back (the fleet benchmark's storms, from the kill: 5.6 s
// for one replica's 5,000 agents and 25.5 s for four replicas' 20,000 before, 4.9 s and 19.3 s
// since; the bare floor's, with the same agents, 3.3 s and 21.9 s before, 2.3 s and 16.9 s).
//
// So the channel backs off within the agent's own bounds (ReconnectDialOption), and an agent
// whose connection broke wakes from its backoff as soon as the channel is ready again
// (WaitToReconnect). A refusal by a server that was reached (busy, a superseded stream) leaves
// the channel ready, and the whole backoff is slept as before.

// ReconnectDialOption makes a gRPC channel back off between its connection attempts as the
// agent does between its streams: from minWait, growing to maxWait, with jitter.
func ReconnectDialOption(minWait, maxWait time.Duration) grpc.DialOption {
	cfg := backoff.DefaultConfig
	cfg.BaseDelay, cfg.MaxDelay = minWait, max(maxWait, minWait)
	return grpc.WithConnectParams(grpc.ConnectParams{Backoff: cfg, MinConnectTimeout: 20 * time.Second})
}

// WaitToReconnect waits d, or less: if during the wait the channel is seen not ready (its
// connection broke, or it is between two connection attempts) and then becomes ready, the wait
// ends there, since the server can be reached again. An idle channel is asked to connect at
// once. It reports false when ctx ended first.
func WaitToReconnect(ctx context.Context, conn *grpc.ClientConn, d time.Duration) bool {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	broken := false
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			if broken {
				return true
			}
		case connectivity.Shutdown: // no change is coming: the whole wait
			<-wctx.Done()
			return ctx.Err() == nil
		case connectivity.Idle:
			broken = true
			conn.Connect()
		default: // Connecting, TransientFailure
			broken = true
		}
		if !conn.WaitForStateChange(wctx, st) {
			return ctx.Err() == nil
		}
	}
}
