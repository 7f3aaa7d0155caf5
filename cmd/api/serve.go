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

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/imprun/imprun-server/config"
	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/migrations"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
)

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
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready chan<- string) error {
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

	var temporal temporalclient.Holder
	temporal.Connect(ctx, client.Options{HostPort: cfg.Temporal.HostPort, Namespace: cfg.Temporal.Namespace}, log)
	defer temporal.Close()

	db, err := store.Open(sqlDB)
	if err != nil {
		return err
	}
	auth := httpapi.NewAuthenticator(httpapi.AuthConfig{
		IssuerURL: cfg.OIDC.IssuerURL, Audience: cfg.OIDC.Audience,
		RolesClaim: cfg.OIDC.RolesClaim, EmailClaim: cfg.OIDC.EmailClaim,
	})
	api := httpapi.NewAPI(httpapi.Deps{Store: store.New(db), Auth: auth, Temporal: &temporal, Logger: log})

	srv := httpapi.NewServer(httpapi.Options{
		Register:     api.Register,
		Logger:       log,
		BodyLimit:    cfg.HTTP.BodyLimit,
		ReadTimeout:  cfg.HTTP.ReadTimeout,
		WriteTimeout: cfg.HTTP.WriteTimeout,
		Checks: []httpapi.ReadyCheck{
			{Name: "postgres", Check: sqlDB.PingContext},
			{Name: "temporal", Check: temporal.Check},
		},
	})

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTP.Addr, err)
	}
	log.Info("REST API listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", cfg.HTTP.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
