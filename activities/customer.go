package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/credential"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/tracing"
	"github.com/imprun/imprun-server/workflows"
)

// Customer holds the activities of SubscriptionWorkflow, CredentialSyncWorkflow and
// CredentialExpiryWorkflow.
type Customer struct {
	Store     *store.Store
	Temporal  client.Client
	TaskQueue string
	Log       *slog.Logger
	Outcomes  *metrics.Outcomes // nil: nothing recorded
}

// Register adds the activities to a worker.
func (a *Customer) Register(r worker.ActivityRegistry) {
	r.RegisterActivityWithOptions(a.TransitionSubscription, activity.RegisterOptions{Name: workflows.ActTransitionSubscription})
	r.RegisterActivityWithOptions(a.RecordIgnoredSignal, activity.RegisterOptions{Name: workflows.ActRecordIgnoredSignal})
	r.RegisterActivityWithOptions(a.PlanCredentialSync, activity.RegisterOptions{Name: workflows.ActPlanCredentialSync})
	r.RegisterActivityWithOptions(a.ConfirmRollout, activity.RegisterOptions{Name: workflows.ActConfirmRollout})
	r.RegisterActivityWithOptions(a.ConfirmRollouts, activity.RegisterOptions{Name: workflows.ActConfirmRollouts})
	r.RegisterActivityWithOptions(a.ExpireCredential, activity.RegisterOptions{Name: workflows.ActExpireCredential})
}

// TransitionSubscription applies a decision and writes its audit entry with the decision's
// actor (REST user or Temporal CLI operator alike). A change into or out of active re-syncs
// the credentials of the subscriber's app.
func (a *Customer) TransitionSubscription(ctx context.Context, in workflows.TransitionInput) (workflows.TransitionResult, error) {
	id, err := uuid.Parse(in.SubscriptionID)
	if err != nil {
		return workflows.TransitionResult{}, validation("bad subscription id")
	}
	// The transition, its audit row and the new credential versions commit together: a retry
	// after a failure finds all of them done or none. The versions are the rollouts' durable
	// intent; they are started below, and by the dispatcher if that fails.
	var bumped []models.Credential
	sub, applied, err := a.Store.TransitionSubscriptionWith(ctx, id, in.From, in.To, in.Decision.Actor, in.Decision.Reason,
		func(tx *store.Store, before, sub models.Subscription) error {
			tid := sub.ProviderTenantID
			if err := tx.InsertAudit(ctx, &models.AuditLog{ActorType: models.ActorUser, ActorEmail: models.Cut(in.Decision.Actor, 320), ActorID: models.Cut(in.Decision.Actor, 100),
				ActorRoles: models.StringArray{"source:" + in.Decision.Source}, TenantID: &tid, Action: in.Action, ResourceType: "subscription", ResourceID: sub.ID.String(),
				Summary: models.JSONMap{"status": map[string]string{"before": before.Status, "after": sub.Status}, "reason": models.Cut(in.Decision.Reason, 1000),
					"source": in.Decision.Source, "workflow_id": workflows.SubscriptionWorkflowID(in.SubscriptionID)}}); err != nil {
				return err
			}
			if before.Status == models.SubscriptionActive || sub.Status == models.SubscriptionActive {
				var err error
				bumped, err = tx.BumpAppCredentials(ctx, sub.ClientAppID)
				return err
			}
			return nil
		})
	if err != nil {
		return workflows.TransitionResult{}, err
	}
	if !applied {
		return workflows.TransitionResult{Status: sub.Status}, nil
	}
	a.Outcomes.Subscription(sub.Status)
	for _, c := range bumped {
		if err := credential.StartRuns(ctx, a.Store, a.Temporal, a.TaskQueue, c, "subscription "+sub.ID.String()+" is "+sub.Status); err != nil && a.Log != nil {
			a.Log.Warn("credential rollout not started now; the dispatcher will start it", "credential_id", c.ID, "version", c.Version, "err", err)
		}
	}
	return workflows.TransitionResult{Applied: true, Status: sub.Status}, nil
}

// RecordIgnoredSignal logs and audits a decision that did not apply.
func (a *Customer) RecordIgnoredSignal(ctx context.Context, in workflows.IgnoredSignal) error {
	if a.Log != nil {
		a.Log.Warn("subscription signal ignored", "workflow_id", workflows.SubscriptionWorkflowID(in.SubscriptionID),
			"signal", in.Signal, "status", in.Status, "problem", in.Problem)
	}
	id, err := uuid.Parse(in.SubscriptionID)
	if err != nil {
		return nil
	}
	sub, err := a.Store.GetSubscriptionByID(ctx, id)
	if err != nil {
		return nil
	}
	tid := sub.ProviderTenantID
	return a.Store.InsertAudit(ctx, &models.AuditLog{ActorType: models.ActorWorkflow, ActorID: workflows.SubscriptionWorkflowID(in.SubscriptionID),
		ActorEmail: in.Actor, ActorRoles: models.StringArray{}, TenantID: &tid, Action: "subscription.signal_ignored", ResourceType: "subscription",
		ResourceID: in.SubscriptionID, Summary: models.JSONMap{"signal": in.Signal, "status": in.Status, "problem": in.Problem}})
}

func limitsOf(g store.SubscriptionGrant) models.PlanLimits {
	var l models.PlanLimits
	if rl := g.RateLimit.V; rl != nil {
		n := int64(rl.Requests)
		switch rl.Period {
		case models.PeriodSecond:
			l.RequestsPerSecond = n
		case models.PeriodMinute:
			l.RequestsPerMinute = n
		case models.PeriodHour:
			l.RequestsPerHour = n
		case models.PeriodDay:
			l.RequestsPerDay = n
		}
	}
	if q := g.Quota.V; q != nil {
		l.Quota = int64(q.Requests)
		l.QuotaPeriod = q.Period
	}
	return l
}

// PlanCredentialSync works out where the credential version must be present (the clusters of
// the publishes of its app's active subscriptions, while it is active and unexpired) and
// absent (every other cluster it was ever sent to), enqueues one upsert or revoke command per
// cluster (idempotently) and records the pending rollout. It reports a superseded version.
func (a *Customer) PlanCredentialSync(ctx context.Context, in workflows.CredentialSyncInput) (workflows.CredentialSyncPlan, error) {
	var plan workflows.CredentialSyncPlan
	id, err := uuid.Parse(in.CredentialID)
	if err != nil {
		return plan, validation("bad credential id")
	}
	// Planned under the credential's row lock: a change that bumps its version waits for this
	// plan's rollout rows, so its own plan revokes (or replaces) everything this one sends; and
	// a plan that runs after a newer version committed is superseded. Without the lock, an
	// upsert planned for an old version could land after the revocation's plan found nothing
	// to revoke.
	err = a.Store.InTx(ctx, func(ctx context.Context) error {
		c, err := a.Store.LockCredential(ctx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && c.Version > in.Version) {
			plan.Superseded = true
			return nil
		}
		if err != nil {
			return err
		}
		plan, err = a.planRollout(ctx, c, in.Reason)
		return err
	})
	return plan, err
}

// planRollout queues the commands of credential c's current version for every cluster that
// must hold it (its grants) or drop it (everywhere it was ever sent), records them as the
// rollout's rows and returns the targets with what each cluster already confirmed.
func (a *Customer) planRollout(ctx context.Context, c models.Credential, reason string) (workflows.CredentialSyncPlan, error) {
	var plan workflows.CredentialSyncPlan
	grants, err := a.grantsByCluster(ctx, c)
	if err != nil {
		return plan, err
	}
	before, err := a.Store.RolloutClusters(ctx, c.ID)
	if err != nil {
		return plan, err
	}
	clusterSet := map[uuid.UUID]bool{}
	for cl := range grants {
		clusterSet[cl] = true
	}
	for _, cl := range before {
		clusterSet[cl] = true
	}
	clusters := make([]uuid.UUID, 0, len(clusterSet))
	for cl := range clusterSet {
		clusters = append(clusters, cl)
	}
	slices.SortFunc(clusters, func(x, y uuid.UUID) int { return strings.Compare(x.String(), y.String()) })

	// A fixed number of statements however many clusters: one batch of commands, one upsert of
	// the rollout rows, one read back.
	cmds, actions := rolloutCommands(c, clusters, grants, reason, models.TraceContext(tracing.Inject(ctx)))
	if err := a.Store.EnqueueCommands(ctx, cmds); err != nil {
		return plan, err
	}
	for _, c := range cmds {
		a.Outcomes.CommandsQueued(c.Kind, 1)
	}
	planned := make([]store.PlannedRollout, len(clusters))
	for i, cl := range clusters {
		planned[i] = store.PlannedRollout{ClusterID: cl, Action: actions[i], CommandID: cmds[i].ID}
	}
	if err := a.Store.PlanRollouts(ctx, c.ID, c.Version, planned); err != nil {
		return plan, err
	}
	rows, err := a.Store.RolloutsOn(ctx, c.ID, clusters)
	if err != nil {
		return plan, err
	}
	byCluster := make(map[uuid.UUID]int, len(rows))
	for i, r := range rows {
		byCluster[r.ClusterID] = i
	}
	for i, cl := range clusters {
		t := workflows.RolloutTarget{ClusterID: cl.String(), Action: actions[i], CommandID: cmds[i].ID.String()}
		if j, ok := byCluster[cl]; ok {
			row := rows[j]
			t.ClusterName, t.QueuedAt = row.ClusterName, row.QueuedAt
			if row.Version == c.Version && row.Status == models.RolloutConfirmed {
				t.Confirmed = true
				if row.ConfirmedBy != nil {
					t.ConfirmedBy = row.ConfirmedBy.String()
				}
			}
		}
		plan.Targets = append(plan.Targets, t)
	}
	return plan, nil
}

// grantsByCluster is, for a credential that may be used now, its grants per cluster (none for
// one revoked or expired).
func (a *Customer) grantsByCluster(ctx context.Context, c models.Credential) (map[uuid.UUID][]models.CredentialGrant, error) {
	grants := map[uuid.UUID][]models.CredentialGrant{}
	if c.Status != models.CredentialActive || (c.ExpiresAt != nil && !c.ExpiresAt.After(time.Now())) {
		return grants, nil
	}
	rows, err := a.Store.ActiveGrants(ctx, c.ClientAppID)
	if err != nil {
		return nil, err
	}
	for _, g := range rows {
		planID := ""
		if g.PlanID != nil {
			planID = g.PlanID.String()
		}
		grants[g.ClusterID] = append(grants[g.ClusterID], models.CredentialGrant{PublishID: g.PublishID.String(), PlanID: planID, Limits: limitsOf(g)})
	}
	return grants, nil
}

// rolloutCommands are the commands of c's version for each cluster: an upsert with its grants
// where it has some, else a revocation.
func rolloutCommands(c models.Credential, clusters []uuid.UUID, grants map[uuid.UUID][]models.CredentialGrant, reason string, trace models.TraceContext) ([]*models.AgentCommand, []string) {
	cmds := make([]*models.AgentCommand, len(clusters))
	actions := make([]string, len(clusters))
	for i, cl := range clusters {
		cmd := &models.AgentCommand{ClusterID: cl, DedupeKey: fmt.Sprintf("cred/%s/%d/%s", c.ID, c.Version, cl),
			SupersedeKey: "credential/" + c.ID.String() + "/" + cl.String(), TraceContext: trace}
		actions[i] = models.RolloutRevoke
		if g, ok := grants[cl]; ok {
			actions[i] = models.RolloutUpsert
			cmd.Kind, cmd.Priority = models.CommandCredentialUpsert, models.PriorityNormal
			cmd.Payload = models.ToJSONMap(models.CredentialUpsertPayload{CredentialID: c.ID.String(), Version: c.Version, Type: c.Type,
				KeyPrefix: c.KeyPrefix, SecretHash: c.SecretHash, ClientAppID: c.ClientAppID.String(), Grants: g, ExpiresAt: c.ExpiresAt})
		} else {
			cmd.Kind, cmd.Priority = models.CommandCredentialRevoke, models.PriorityRevocation
			cmd.Payload = models.ToJSONMap(models.CredentialRevokePayload{CredentialID: c.ID.String(), Version: c.Version, Reason: reason})
		}
		cmds[i] = cmd
	}
	return cmds, actions
}

// ConfirmRollout marks one cluster of a credential version's rollout confirmed.
func (a *Customer) ConfirmRollout(ctx context.Context, in workflows.ConfirmInput) error {
	cred, err := uuid.Parse(in.CredentialID)
	if err != nil {
		return fmt.Errorf("credential id %q: %w", in.CredentialID, err)
	}
	cluster, err := uuid.Parse(in.ClusterID)
	if err != nil {
		return fmt.Errorf("cluster id %q: %w", in.ClusterID, err)
	}
	command, err := uuid.Parse(in.CommandID)
	if err != nil {
		return fmt.Errorf("command id %q: %w", in.CommandID, err)
	}
	done, err := a.Store.ConfirmRollout(ctx, cred, in.Version, store.RolloutConfirmation{ClusterID: cluster, CommandID: command, AgentID: optionalUUID(in.AgentID)})
	a.recordRollouts(done)
	return err
}

// ConfirmRollouts marks several clusters of a credential version's rollout confirmed in one
// statement. A row that a newer version (or another command) took over is left alone.
func (a *Customer) ConfirmRollouts(ctx context.Context, in workflows.ConfirmRolloutsInput) error {
	if len(in.Clusters) == 0 {
		return nil
	}
	cred, err := uuid.Parse(in.CredentialID)
	if err != nil {
		return fmt.Errorf("credential id %q: %w", in.CredentialID, err)
	}
	cs := make([]store.RolloutConfirmation, 0, len(in.Clusters))
	for _, c := range in.Clusters {
		cluster, cerr := uuid.Parse(c.ClusterID)
		command, merr := uuid.Parse(c.CommandID)
		if cerr != nil || merr != nil {
			continue // matches no row; it must not hold up the others
		}
		cs = append(cs, store.RolloutConfirmation{ClusterID: cluster, CommandID: command, AgentID: optionalUUID(c.AgentID)})
	}
	done, err := a.Store.ConfirmRollouts(ctx, cred, in.Version, cs)
	a.recordRollouts(done)
	return err
}

// optionalUUID is the id s names, nil when it names none.
func optionalUUID(s string) *uuid.UUID {
	if id, err := uuid.Parse(s); err == nil {
		return &id
	}
	return nil
}

// ExpireCredential ends a credential whose time has come: expired at its expiry, revoked at
// the end of a rotation's grace period. The revocation rollout starts right away.
func (a *Customer) ExpireCredential(ctx context.Context, in workflows.CredentialExpiryInput) error {
	id, err := uuid.Parse(in.CredentialID)
	if err != nil {
		return validation("bad credential id")
	}
	cur, err := a.Store.GetCredentialByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	status := models.CredentialExpired
	if cur.RevokeAt != nil && (cur.ExpiresAt == nil || !cur.RevokeAt.After(*cur.ExpiresAt)) {
		status = models.CredentialRevoked
	}
	c, changed, err := a.Store.EndCredential(ctx, id, status)
	if err != nil {
		return err
	}
	if changed {
		tid := c.TenantID
		if err := a.Store.InsertAuditOnce(ctx, &models.AuditLog{ActorType: models.ActorWorkflow,
			ActorID: workflows.CredentialExpiryWorkflowID(c.ID.String()), ActorRoles: models.StringArray{}, TenantID: &tid,
			Action: "credential." + status, ResourceType: "credential", ResourceID: c.ID.String(), ResourceName: c.KeyPrefix,
			Summary: models.JSONMap{"version": c.Version}}); err != nil {
			return err
		}
	}
	return credential.StartSync(ctx, a.Temporal, a.TaskQueue, c, "credential "+status)
}

// recordRollouts counts the rollouts a confirmation ended, with how long each took.
func (a *Customer) recordRollouts(done []store.ConfirmedRollout) {
	for _, d := range done {
		a.Outcomes.Rollout(d.Action, time.Duration(d.Seconds*float64(time.Second)))
	}
}
