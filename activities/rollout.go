package activities

import (
	"context"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/publish"
	"github.com/imprun/imprun-server/rollout"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// Rollout holds the activities of RolloutWorkflow.
type Rollout struct {
	Store *store.Store
}

// Register adds the activities to a worker.
func (a *Rollout) Register(r worker.ActivityRegistry) {
	r.RegisterActivityWithOptions(a.ClaimRolloutCluster, activity.RegisterOptions{Name: workflows.ActClaimRolloutCluster})
	r.RegisterActivityWithOptions(a.SaveRollout, activity.RegisterOptions{Name: workflows.ActSaveRollout})
}

// ClaimRolloutCluster claims one cluster's publish run. A publish rule the cluster breaks now
// (maintenance since the rollout started, say) fails that cluster, never retried.
func (a *Rollout) ClaimRolloutCluster(ctx context.Context, in workflows.ClaimRolloutClusterInput) (workflows.ClaimRolloutClusterResult, error) {
	out, err := rollout.ClaimCluster(ctx, a.Store, in)
	if err != nil {
		if msg, ok := publish.Reason(err); ok {
			return out, validation("%s", msg)
		}
		if f, ok := fault.As(err); ok && f.Kind != fault.Unavailable {
			return out, validation("%s", f.Detail)
		}
	}
	return out, err
}

// SaveRollout records the run's state (and a command's audit row).
func (a *Rollout) SaveRollout(ctx context.Context, in workflows.SaveRolloutInput) error {
	return rollout.SaveState(ctx, a.Store, in)
}
