package main

import (
	"log/slog"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/config"
)

// deps are what the activities of this worker need.
type deps struct {
	cfg      *config.Config
	log      *slog.Logger
	db       *gorm.DB
	temporal client.Client
}

// register adds every workflow and activity to the worker.
func register(w worker.Registry, d deps) error {
	_ = w
	_ = d
	return nil
}
