package activities

import (
	"context"
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// StartCredentialRuns starts the rollout of a credential's current version and, for a
// credential with an end in sight, the run that ends it on time; then it records that they
// were started. Both starts are idempotent (deterministic workflow ids), so the request that
// made the change and the dispatcher can both call it.
func StartCredentialRuns(ctx context.Context, st *store.Store, tc client.Client, taskQueue string, cred models.Credential, reason string) error {
	if err := StartCredentialSync(ctx, tc, taskQueue, cred, reason); err != nil {
		return err
	}
	end := cred.ExpiresAt
	if cred.RevokeAt != nil && (end == nil || cred.RevokeAt.Before(*end)) {
		end = cred.RevokeAt
	}
	if end != nil && cred.Status == models.CredentialActive {
		if err := StartCredentialExpiry(ctx, tc, taskQueue, cred, *end); err != nil {
			return err
		}
	}
	return st.MarkCredentialRunsStarted(ctx, cred.ID, cred.Version)
}

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

func (d *Dispatcher) once(ctx context.Context, grace time.Duration) {
	creds, err := d.Store.PendingCredentialRuns(ctx, grace, 100)
	if err != nil {
		if ctx.Err() == nil {
			d.Log.Warn("dispatcher: read pending credential runs", "err", err)
		}
		return
	}
	for _, c := range creds {
		if err := StartCredentialRuns(ctx, d.Store, d.Temporal, d.TaskQueue, c, "dispatched: the change was committed but its rollout had not started"); err != nil {
			d.Log.Warn("dispatcher: start credential runs", "credential_id", c.ID, "version", c.Version, "err", err)
			return // Temporal is likely still away; try again on the next tick
		}
		d.Log.Info("dispatcher: started a stranded credential rollout", "credential_id", c.ID, "version", c.Version, "status", c.Status)
	}
}
