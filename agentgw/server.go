package agentgw

import (
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

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
	}
	if o.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("grpc tls: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	s := grpc.NewServer(opts...)
	agentv1.RegisterAgentServiceServer(s, g)
	return s, nil
}
