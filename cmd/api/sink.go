package main

import (
	"log/slog"

	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
)

// resultSink passes acknowledged agent results on to their workflows.
func resultSink(_ *temporalclient.Holder, _ *store.Store, _ *slog.Logger) agentgw.ResultSink {
	return nil
}
