package activities

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/imprun/imprun-server/credential"
	"github.com/imprun/imprun-server/store"
)

// Dispatcher starts the workflow runs of changes that were committed but whose runs never
// started (Temporal was unreachable, the api replica died between commit and start). The
// change itself is the intent: a credential whose version is ahead of the version its runs
// were started for.
type Dispatcher struct {
	Store     *store.Store
	Temporal  client.Client
	TaskQueue string
	Log       *slog.Logger
	// Every is how often it looks (2 s when zero); Grace is how old a change must be before
	// it counts as stranded (5 s when zero), so a request still starting it is left alone.
	Every, Grace time.Duration
	// ClaimGrace is how old a publish's claim must be before the reconciler asks Temporal
	// whether its run exists (1 min when zero); ReconcileEvery how often claims are checked
	// (30 s when zero: a claim waiting for an offline cluster is asked about each time).
	ClaimGrace, ReconcileEvery time.Duration

	lastReconcile time.Time
}

// Run dispatches until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	every, grace := d.Every, d.Grace
	if every <= 0 {
		every = 2 * time.Second
	}
	if grace <= 0 {
		grace = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.once(ctx, grace)
	}
}

// reconcileClaims releases publishes whose claiming run never started or ended without
// writing its outcome (terminated, say), so that a re-publish is not refused forever.
func (d *Dispatcher) reconcileClaims(ctx context.Context) {
	grace := d.ClaimGrace
	if grace <= 0 {
		grace = time.Minute
	}
	claims, err := d.Store.OldClaims(ctx, grace, 100)
	if err != nil {
		if ctx.Err() == nil {
			d.Log.Warn("reconciler: read claimed publishes", "err", err)
		}
		return
	}
	for _, c := range claims {
		desc, err := d.Temporal.DescribeWorkflowExecution(ctx, c.WorkflowID, "")
		var reason string
		var notFound *serviceerror.NotFound
		switch {
		case errors.As(err, &notFound):
			reason = "the workflow run " + c.WorkflowID + " never started; publish (or withdraw) again"
		case err != nil:
			d.Log.Warn("reconciler: describe run", "workflow_id", c.WorkflowID, "err", err)
			return // Temporal is away: decide nothing
		case desc.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING:
			reason = "the workflow run " + c.WorkflowID + " ended (" + strings.ToLower(strings.TrimPrefix(desc.GetWorkflowExecutionInfo().GetStatus().String(), "WORKFLOW_EXECUTION_STATUS_")) +
				") without recording its outcome; publish (or withdraw) again"
		default:
			continue
		}
		released, err := d.Store.ReleaseOrphanClaim(ctx, c.ID, c.WorkflowID, reason)
		if err != nil {
			d.Log.Warn("reconciler: release claim", "publish_id", c.ID, "err", err)
			continue
		}
		if released {
			d.Log.Warn("reconciler: released an orphaned publish claim", "publish_id", c.ID, "workflow_id", c.WorkflowID, "status_before", c.Status, "reason", reason)
		}
	}
}

func (d *Dispatcher) once(ctx context.Context, grace time.Duration) {
	every := d.ReconcileEvery
	if every <= 0 {
		every = 30 * time.Second
	}
	if time.Since(d.lastReconcile) >= every {
		d.lastReconcile = time.Now()
		d.reconcileClaims(ctx)
	}
	creds, err := d.Store.PendingCredentialRuns(ctx, grace, 100)
	if err != nil {
		if ctx.Err() == nil {
			d.Log.Warn("dispatcher: read pending credential runs", "err", err)
		}
		return
	}
	for _, c := range creds {
		if err := credential.StartRuns(ctx, d.Store, d.Temporal, d.TaskQueue, c, "dispatched: the change was committed but its rollout had not started"); err != nil {
			d.Log.Warn("dispatcher: start credential runs", "credential_id", c.ID, "version", c.Version, "err", err)
			return // Temporal is likely still away; try again on the next tick
		}
		d.Log.Info("dispatcher: started a stranded credential rollout", "credential_id", c.ID, "version", c.Version, "status", c.Status)
	}
}
