package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/config"
	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/migrations"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
	"github.com/imprun/imprun-server/tracing"
)

// flushTracing exports the spans still buffered, for a few seconds at most.
func flushTracing(shutdown func(context.Context) error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		log.Warn("flush traces", "err", err)
	}
}

func serveCmd(load func() (*config.Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Serve the REST API and the agent gRPC gateway",
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			log := cfg.NewLogger(os.Stderr)
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, log, nil)
		},
	}
}

// serve runs the API until ctx ends, then shuts down gracefully: the listeners close, in-flight
// requests finish (up to http.shutdown_timeout) and the pools close. ready, when not nil,
// receives the bound REST address once the server accepts connections (tests use it).
//
// It is long because it is the process's wiring, read top to bottom: each dependency is opened
// in the order the next one needs it and closed by a defer beside it; split, the order and the
// defers would be spread over several functions.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready chan<- string) error {
	if err := cfg.ServeSafety(); err != nil {
		return err
	}
	shutdownTracing, err := tracing.Setup(ctx, "imprun-api")
	if err != nil {
		return err
	}
	defer flushTracing(shutdownTracing, log)
	if cfg.Dev.AllowInsecureTransport {
		log.Warn("dev.allow_insecure_transport is on: OIDC and agent traffic may cross the network in the clear; never use this in production")
	}
	sqlDB, err := store.OpenSQL(ctx, cfg.Database.URL, cfg.Database.ConnectRetry, log)
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	sqlDB.SetMaxOpenConns(cfg.Database.MaxOpenConns)
	sqlDB.SetMaxIdleConns(cfg.Database.MaxIdleConns)

	m, err := migrations.New(sqlDB)
	if err != nil {
		return err
	}
	if v, err := m.Version(ctx); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	} else if v != m.Latest() {
		return fmt.Errorf("schema is at version %d but this binary needs %d: run `api migrate up`", v, m.Latest())
	}

	// One registry for the whole process: HTTP, the Temporal client and the agent gateway.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var temporal temporalclient.Holder
	compression, _ := temporalclient.Compression(cfg.Temporal.GRPCCompression) // validated with the config
	temporal.Connect(ctx, client.Options{HostPort: cfg.Temporal.HostPort, Namespace: cfg.Temporal.Namespace,
		MetricsHandler: metrics.NewTemporal(reg), Interceptors: temporalclient.Interceptors(),
		ConnectionOptions: client.ConnectionOptions{GrpcCompression: compression}}, log)
	defer temporal.Close()

	db, err := store.Open(sqlDB)
	if err != nil {
		return err
	}
	auth := httpapi.NewAuthenticator(httpapi.AuthConfig{
		IssuerURL: cfg.OIDC.IssuerURL, Audience: cfg.OIDC.Audience,
		RolesClaim: cfg.OIDC.RolesClaim, EmailClaim: cfg.OIDC.EmailClaim,
	})
	if cfg.Agent.JWTSecret == "" {
		return fmt.Errorf("config key agent.jwt_secret (%s) must be set: it signs agent JWTs (make run generates one)", config.EnvVar("agent.jwt_secret"))
	}
	signer, err := agentgw.NewSigner(cfg.Agent.JWTSecret, cfg.Agent.JWTTTL)
	if err != nil {
		return err
	}
	st := store.New(db)
	gw := agentgw.New(agentgw.Config{
		DatabaseURL:       cfg.Database.URL,
		HeartbeatInterval: cfg.Agent.HeartbeatInterval,
		MissedHeartbeats:  cfg.Agent.MissedHeartbeats,
		FlushInterval:     cfg.Agent.PresenceFlushInterval,
		ReplicaName:       replicaName(),
		ConnectSlots:      cfg.AgentConnectSlots(),
		ConnectQueue:      cfg.Agent.ConnectQueue,
	}, st, signer, agentgw.WithLogger(log.With("component", "agentgw")), agentgw.WithResultSink(resultSink(&temporal, st, log)),
		agentgw.WithMetrics(reg, replicaName()), agentgw.WithSyncMetrics(metrics.NewSync(reg)))
	grpcSrv, err := agentgw.NewGRPCServer(gw, agentgw.ServerOptions{
		TLSCertFile: cfg.GRPC.TLSCertFile, TLSKeyFile: cfg.GRPC.TLSKeyFile,
		MaxRecvMsgSize: cfg.GRPC.MaxRecvMsgSize, MaxSendMsgSize: cfg.GRPC.MaxSendMsgSize, KeepaliveMinTime: cfg.GRPC.KeepaliveMin,
	})
	if err != nil {
		return err
	}
	api := httpapi.NewAPI(httpapi.Deps{Store: st, Auth: auth, Temporal: &temporal, Logger: log,
		Hooks: httpapi.Hooks{Agents: gw, CatalogUsage: store.PublishUsage{Store: st}},
		Settings: httpapi.Settings{RegistrationTokenTTL: cfg.Agent.RegistrationTokenTTL,
			PublishDeadline: cfg.Workflow.PublishDeadline, ApprovalDeadline: cfg.Workflow.ApprovalDeadline, TaskQueue: cfg.Temporal.TaskQueue,
			SyncLimits: gw.SyncLimits()},
	})

	proxies, _ := cfg.HTTP.TrustedProxyNets() // validated when the configuration was loaded
	srv := httpapi.NewServer(httpapi.Options{
		TrustedProxies: proxies,
		Registry:       reg,
		Register:       api.Register,
		Logger:         log,
		BodyLimit:      cfg.HTTP.BodyLimit,
		ReadTimeout:    cfg.HTTP.ReadTimeout,
		WriteTimeout:   cfg.HTTP.WriteTimeout,
		Checks: []httpapi.ReadyCheck{
			{Name: "postgres", Check: sqlDB.PingContext},
			{Name: "temporal", Check: temporal.Check},
		},
	})

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTP.Addr, err)
	}
	gln, err := net.Listen("tcp", cfg.GRPC.Addr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen %s: %w", cfg.GRPC.Addr, err)
	}
	if cfg.HTTP.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.HTTP.PprofAddr, log)
		if err != nil {
			ln.Close()
			gln.Close()
			return err
		}
		defer stopPprof()
	}
	log.Info("REST API listening", "addr", ln.Addr().String())
	log.Info("agent gRPC gateway listening", "addr", gln.Addr().String(), "tls", cfg.GRPC.TLSCertFile != "")

	gwCtx, stopGateway := context.WithCancel(context.WithoutCancel(ctx))
	gwDone := make(chan struct{})
	go func() { gw.Run(gwCtx); close(gwDone) }()
	// Membership and tenant changes on any replica reach this one's principal cache.
	idCtx, stopIdentity := context.WithCancel(context.WithoutCancel(ctx))
	idDone := make(chan struct{})
	go func() { api.ListenIdentityChanges(idCtx, cfg.Database.URL); close(idDone) }()
	defer func() { stopIdentity(); <-idDone }()
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- grpcSrv.Serve(gln) }()
	if ready != nil {
		ready <- ln.Addr().String()
	}

	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", cfg.HTTP.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	// Agents are told Close{SHUTDOWN} and reconnect to another replica; then the gRPC server
	// drains, and REST requests in flight finish.
	stopGateway()
	<-gwDone
	grpcDone := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(grpcDone) }()
	select {
	case <-grpcDone:
	case <-sctx.Done():
		grpcSrv.Stop()
	}
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return runErr
}

// replicaName labels this api replica's gateway series: the host name (a pod's name in
// Kubernetes), stable across restarts of the same replica.
func replicaName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "api"
}
