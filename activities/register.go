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
