package activities

import (
	"log/slog"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// RegisterAll adds every workflow and activity of imprun-server to a worker: cmd/worker and
// the tests' in-process workers register exactly the same set.
// o, when not nil, records the outcomes of publishes, rollouts and subscription transitions.
func RegisterAll(w worker.Registry, st *store.Store, tc client.Client, taskQueue string, log *slog.Logger, o *metrics.Outcomes) {
	w.RegisterWorkflow(workflows.PublishWorkflow)
	w.RegisterWorkflow(workflows.WithdrawWorkflow)
	w.RegisterWorkflow(workflows.SubscriptionWorkflow)
	w.RegisterWorkflow(workflows.CredentialSyncWorkflow)
	w.RegisterWorkflow(workflows.CredentialExpiryWorkflow)
	w.RegisterWorkflow(workflows.RolloutWorkflow)
	(&Publish{Store: st, Temporal: tc, Outcomes: o}).Register(w)
	(&Rollout{Store: st}).Register(w)
	(&Customer{Store: st, Temporal: tc, TaskQueue: taskQueue, Log: log, Outcomes: o}).Register(w)
}

// WorkerOptions are the options of every imprun worker (cmd/worker and the tests' in-process
// workers). The SDK's defaults poll with two goroutines per task type; a publish's first
// workflow task runs its local activities (database steps) before it completes, and under 32
// concurrent publishes new workflow tasks waited seconds for a poll (the trace of
// BenchmarkPublish showed WorkflowTaskScheduled -> Started at 4.8 s). More pollers keep new
// runs from queueing behind the ones in progress; slots stay at the SDK's bounds.
func WorkerOptions() worker.Options {
	return worker.Options{
		MaxConcurrentWorkflowTaskPollers: 16,
		MaxConcurrentActivityTaskPollers: 8,
	}
}
