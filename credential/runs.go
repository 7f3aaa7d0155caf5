package credential

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// StartRuns starts the rollout of a credential's current version and, for a credential with
// an end in sight, the run that ends it on time; then it records that they were started. Both
// starts are idempotent (deterministic workflow ids), so the request that made the change, the
// activities and the dispatcher can all call it.
func StartRuns(ctx context.Context, st *store.Store, tc client.Client, taskQueue string, cred models.Credential, reason string) error {
	if err := StartSync(ctx, tc, taskQueue, cred, reason); err != nil {
		return err
	}
	end := cred.ExpiresAt
	if cred.RevokeAt != nil && (end == nil || cred.RevokeAt.Before(*end)) {
		end = cred.RevokeAt
	}
	if end != nil && cred.Status == models.CredentialActive {
		if err := StartExpiry(ctx, tc, taskQueue, cred, *end); err != nil {
			return err
		}
	}
	return st.MarkCredentialRunsStarted(ctx, cred.ID, cred.Version)
}

// StartSync starts the rollout of a credential's current version; starting it again is a
// no-op (the workflow id is deterministic).
func StartSync(ctx context.Context, tc client.Client, taskQueue string, c models.Credential, reason string) error {
	wid := workflows.CredentialSyncWorkflowID(c.ID.String(), c.Version)
	_, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: wid, TaskQueue: taskQueue,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(c.TenantID.String())),
	}, workflows.CredentialSyncWorkflow, workflows.CredentialSyncInput{CredentialID: c.ID.String(), Version: c.Version, Reason: reason})
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil
	}
	return err
}

// StartExpiry schedules the end of a credential at `at`.
func StartExpiry(ctx context.Context, tc client.Client, taskQueue string, c models.Credential, at time.Time) error {
	_, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.CredentialExpiryWorkflowID(c.ID.String()), TaskQueue: taskQueue,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(c.TenantID.String())),
	}, workflows.CredentialExpiryWorkflow, workflows.CredentialExpiryInput{CredentialID: c.ID.String(), At: at})
	return err
}
