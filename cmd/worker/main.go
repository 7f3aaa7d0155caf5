// Command worker is the Temporal worker of imprun-server: it runs every workflow and activity.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/activities"
	"github.com/imprun/imprun-server/config"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
	"github.com/imprun/imprun-server/tracing"
)

func main() {
	cfgPath := flag.String("config", os.Getenv(config.ConfigFileEnv), "YAML configuration file (also "+config.ConfigFileEnv+")")
	flag.Parse()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	log := cfg.NewLogger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("worker failed", "err", err)
		os.Exit(1)
	}
}

// run connects to Postgres and Temporal (retrying with backoff), starts the worker and its
// health/metrics endpoint, and stops gracefully when ctx ends: the worker finishes the
// activities it is running before it returns. ready receives the health address (tests).
func run(ctx context.Context, cfg *config.Config, log *slog.Logger, ready chan<- string) error {
	shutdownTracing, err := tracing.Setup(ctx, "imprun-worker")
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(fctx); err != nil {
			log.Warn("flush traces", "err", err)
		}
	}()
	sqlDB, err := store.OpenSQL(ctx, cfg.Database.URL, cfg.Database.ConnectRetry, log)
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	db, err := store.Open(sqlDB)
	if err != nil {
		return err
	}
	st := store.New(db)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	compression, _ := temporalclient.Compression(cfg.Temporal.GRPCCompression) // validated with the config
	tc, err := temporalclient.Dial(ctx, client.Options{HostPort: cfg.Temporal.HostPort, Namespace: cfg.Temporal.Namespace,
		MetricsHandler: metrics.NewTemporal(reg), Interceptors: temporalclient.Interceptors(),
		ConnectionOptions: client.ConnectionOptions{GrpcCompression: compression}}, cfg.Temporal.ConnectRetry, log)
	if err != nil {
		return err
	}
	defer tc.Close()

	w := worker.New(tc, cfg.Temporal.TaskQueue, activities.WorkerOptions())
	if err := register(w, deps{cfg: cfg, log: log, store: st, temporal: tc, outcomes: metrics.NewOutcomes(reg)}); err != nil {
		return err
	}

	reg.MustRegister(metrics.BacklogCollector{Store: st, Log: log})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", cfg.Worker.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Worker.HTTPAddr, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint", "err", err)
		}
	}()
	defer hs.Close()

	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	// Durable intent: start the runs of changes committed while Temporal was unreachable.
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	go (&activities.Dispatcher{Store: st, Temporal: tc, TaskQueue: cfg.Temporal.TaskQueue, Log: log}).Run(dctx)
	log.Info("worker started", "task_queue", cfg.Temporal.TaskQueue, "namespace", cfg.Temporal.Namespace, "health", ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	<-ctx.Done()
	log.Info("shutting down: waiting for running activities")
	w.Stop()
	log.Info("stopped")
	return nil
}
