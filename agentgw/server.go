package agentgw

import (
	"context"
	"crypto/tls"
	"fmt"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/imprun/imprun-server/proto/agentv1"
)

// ServerOptions configure the gRPC server of the gateway.
type ServerOptions struct {
	TLSCertFile    string // empty: plaintext (loopback development only)
	TLSKeyFile     string
	MaxRecvMsgSize int
	MaxSendMsgSize int
	// KeepaliveMinTime is the shortest ping interval an agent may use; faster pings are
	// answered with GOAWAY (too_many_pings), so a misbehaving client can't busy the server.
	KeepaliveMinTime time.Duration
}

// writeBufferSize is the write buffer of an agent connection.
const writeBufferSize = 8 << 10

// NewGRPCServer builds the gRPC server that serves g.
func NewGRPCServer(g *Gateway, o ServerOptions) (*grpc.Server, error) {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(o.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(o.MaxSendMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: o.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Probe idle connections so a vanished agent (no FIN) is noticed even between
			// heartbeats, and recycle long-lived connections so load spreads over replicas.
			Time:                  30 * time.Second,
			Timeout:               10 * time.Second,
			MaxConnectionAge:      6 * time.Hour,
			MaxConnectionAgeGrace: time.Minute,
		}),
		// Streams are long-lived; the default is unbounded, which is what we want here, but
		// cap how many a single connection may open.
		grpc.MaxConcurrentStreams(16),
		// Lets the gateway end a stream whose handler waits in Recv (see tapStream).
		grpc.InTapHandle(tapStream),
		// A connection takes a write buffer from a shared pool for each flush. A broadcast
		// flushes every connection at once, so the pool runs dry and each flush allocates one:
		// at grpc-go's 32 KB that was 320 MB for 10,000 agents, and garbage collection was a
		// third of the broadcast. Agent messages are small; a bigger one is written in pieces.
		grpc.WriteBufferSize(writeBufferSize),
	}
	if o.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("grpc tls: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	// A panic in a handler ends that one stream or call with Internal (logged with its stack);
	// without this it would end the whole api replica, REST included.
	opts = append(opts, grpc.ChainStreamInterceptor(recoverStream(g)), grpc.ChainUnaryInterceptor(recoverUnary(g)))
	s := grpc.NewServer(opts...)
	agentv1.RegisterAgentServiceServer(s, g)
	// The standard health service, for load balancers and `grpc_health_probe`.
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(agentv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	return s, nil
}

func recoverStream(g *Gateway) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				g.log.Error("panic in gRPC stream handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(srv, ss)
	}
}

func recoverUnary(g *Gateway) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				g.log.Error("panic in gRPC handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}
