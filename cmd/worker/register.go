package main

import (
	"log/slog"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/activities"
	"github.com/imprun/imprun-server/config"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/store"
)

// deps are what the activities of this worker need.
type deps struct {
	cfg      *config.Config
	log      *slog.Logger
	store    *store.Store
	temporal client.Client
	outcomes *metrics.Outcomes
}

// register adds every workflow and activity to the worker.
func register(w worker.Registry, d deps) error {
	activities.RegisterAll(w, d.store, d.temporal, d.cfg.Temporal.TaskQueue, d.log, d.outcomes)
	return nil
}
