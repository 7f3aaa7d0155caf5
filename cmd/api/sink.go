package main

import (
	"log/slog"

	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
)

// resultSink passes acknowledged agent results on to their workflows as signals.
func resultSink(t *temporalclient.Holder, st *store.Store, _ *slog.Logger) agentgw.ResultSink {
	return agentgw.TemporalSink{Temporal: t, Store: st, Decided: agentgw.NewDecidedCommands()}
}
