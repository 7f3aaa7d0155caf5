package activities

import (
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// RegisterAll adds every workflow and activity of imprun-server to a worker: cmd/worker and
// the tests' in-process workers register exactly the same set.
func RegisterAll(w worker.Registry, st *store.Store, tc client.Client) {
	w.RegisterWorkflow(workflows.PublishWorkflow)
	w.RegisterWorkflow(workflows.WithdrawWorkflow)
	(&Publish{Store: st, Temporal: tc}).Register(w)
}
