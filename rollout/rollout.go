package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/publish"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// Service runs the rollout use cases.
type Service struct {
	Store     *store.Store
	Temporal  publish.Temporal
	TaskQueue string
	Log       *slog.Logger
}

var errTemporalDown = fault.Down("temporal_unavailable", "the workflow service is not reachable; try again")

// Create checks the request and every target cluster (nothing starts unless all pass), records
// the rollout with its resolved clusters and waves, and starts its run, which supersedes the
// runs of earlier rollouts of the product still in flight.
func (s *Service) Create(ctx context.Context, tenantID uuid.UUID, actor string, req Request, rec *audit.Record) (models.Rollout, error) {
	var v fault.Validator
	checkShape(&req, &v)
	if err := v.Err(); err != nil {
		return models.Rollout{}, err
	}
	targets, sel, err := s.resolveTargets(ctx, req.Targets, &v)
	if err != nil {
		return models.Rollout{}, err
	}
	waves := resolveWaves(targets, req.Strategy.Waves, &v)
	budget, asked := maxFailures(req.Strategy.MaxFailures, len(targets), &v)
	if err := v.Err(); err != nil {
		return models.Rollout{}, err
	}
	if err := s.checkClusters(ctx, tenantID, req.Changes, targets); err != nil {
		return models.Rollout{}, err
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return models.Rollout{}, errTemporalDown
	}
	spec, err := specOf(req.Changes)
	if err != nil {
		return models.Rollout{}, err
	}
	productID := uuid.MustParse(*req.ProductID)
	ro := models.Rollout{ID: uuid.New(), TenantID: tenantID, ProductID: productID, Spec: spec, Status: models.RolloutProgressing,
		Strategy: models.JSON[models.RolloutStrategy]{V: models.RolloutStrategy{Waves: waves, MaxFailures: budget, MaxFailuresRequested: asked,
			MinSuccessTimeSeconds: req.Strategy.MinSuccessTimeSeconds, ProgressDeadlineSeconds: req.Strategy.ProgressDeadlineSeconds}},
		Selector: models.JSON[models.RolloutSelector]{V: sel}, MaxFailures: budget, BudgetLeft: budget, CreatedBy: actor}
	ro.WorkflowID = workflows.RolloutWorkflowID(ro.ID.String())
	var older []models.Rollout
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		var err error
		if older, err = s.Store.ActiveRolloutsOf(ctx, productID, ro.ID); err != nil {
			return err
		}
		if err := s.Store.CreateRollout(ctx, &ro, clustersOf(waves)); err != nil {
			return err
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "rollout.create", ResourceType: "rollout", ResourceID: ro.ID.String(), ResourceName: req.hostname(),
			Summary: map[string]any{"product_id": productID, "clusters": len(targets), "waves": len(waves), "max_failures": budget, "supersedes": idsOf(older)}})
	})
	if err != nil {
		return ro, err
	}
	return ro, s.start(ctx, tc, ro, older, rec)
}

func (r Request) hostname() string {
	if r.Hostname == nil {
		return ""
	}
	return strings.ToLower(*r.Hostname)
}

func idsOf(rs []models.Rollout) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID.String()
	}
	return out
}

func clustersOf(waves []models.RolloutWave) []models.RolloutCluster {
	var out []models.RolloutCluster
	for w, wave := range waves {
		for i, id := range wave.Clusters {
			out = append(out, models.RolloutCluster{ClusterID: id, Wave: w, Position: i, State: models.RolloutClusterPending})
		}
	}
	return out
}

// specOf keeps the publish fields of the request, as the activities give them to each claim.
func specOf(ch publish.Changes) (models.JSONMap, error) {
	b, err := json.Marshal(ch)
	if err != nil {
		return nil, err
	}
	var m models.JSONMap
	return m, json.Unmarshal(b, &m)
}

// resolveTargets turns the targets into cluster ids: explicit ones must exist; a selector is
// resolved now, once, and recorded.
func (s *Service) resolveTargets(ctx context.Context, t Targets, v *fault.Validator) ([]uuid.UUID, models.RolloutSelector, error) {
	if t.Selector == nil {
		ids := parseIDs("targets.cluster_ids", t.ClusterIDs, v)
		return ids, models.RolloutSelector{ClusterIDs: ids}, nil
	}
	cls, err := s.Store.SelectClusters(ctx, t.Selector.Region, t.Selector.Labels)
	if err != nil {
		return nil, models.RolloutSelector{}, err
	}
	ids := make([]uuid.UUID, 0, len(cls))
	for _, c := range cls {
		ids = append(ids, c.ID)
	}
	v.Check(len(ids) > 0, "targets.selector", "no cluster matches")
	v.Check(len(ids) <= MaxClusters, "targets.selector", fmt.Sprintf("matches %d clusters; at most %d", len(ids), MaxClusters))
	return ids, models.RolloutSelector{ClusterIDs: ids, Region: t.Selector.Region, Labels: t.Selector.Labels}, nil
}

// checkClusters runs the publish rules for every target (cluster exists, takes the gateway
// class, allows the backends, is not in maintenance; product active; hostname free), naming
// the cluster in each failure.
func (s *Service) checkClusters(ctx context.Context, tenantID uuid.UUID, ch publish.Changes, targets []uuid.UUID) error {
	var fields []fault.FieldError
	for _, id := range targets {
		c := ch
		cs := id.String()
		c.ClusterID = &cs
		existing := uuid.Nil
		if ch.ProductID != nil && ch.Hostname != nil {
			if pid, err := uuid.Parse(*ch.ProductID); err == nil {
				if p, err := s.Store.ClusterPublishOf(ctx, tenantID, pid, id, strings.ToLower(*ch.Hostname)); err == nil {
					existing = p.ID
				}
			}
		}
		_, err := publish.Check(ctx, s.Store, tenantID, existing, c)
		f, ok := fault.As(err)
		switch {
		case err == nil:
		case !ok || f.Kind == fault.Unavailable:
			return err
		case len(f.Fields) == 0:
			named := *f
			named.Detail = "cluster " + cs + ": " + f.Detail
			return &named
		default:
			for _, fe := range f.Fields {
				if fe.Field == "cluster_id" || fe.Field == "gateway_id" || fe.Field == "hostname" || fe.Field == "api_services" {
					fe.Field = "targets[" + cs + "]." + fe.Field
				}
				fields = appendOnce(fields, fe)
			}
		}
	}
	if len(fields) > 0 {
		return fault.ValidationFailed(fields...)
	}
	return nil
}

func appendOnce(list []fault.FieldError, fe fault.FieldError) []fault.FieldError {
	for _, x := range list {
		if x == fe {
			return list
		}
	}
	return append(list, fe)
}

// start starts the committed rollout's run; one that can't start is recorded as aborted with
// the reason (audited beside the create), and the caller gets a 503.
func (s *Service) start(ctx context.Context, tc client.Client, ro models.Rollout, older []models.Rollout, rec *audit.Record) error {
	st := ro.Strategy.V
	in := workflows.RolloutInput{RolloutID: ro.ID.String(), TenantID: ro.TenantID.String(), ProductID: ro.ProductID.String(), Actor: ro.CreatedBy,
		MaxFailures: st.MaxFailures, MinSuccessTime: time.Duration(st.MinSuccessTimeSeconds) * time.Second,
		ProgressDeadline: time.Duration(st.ProgressDeadlineSeconds) * time.Second, Supersede: idsOf(older)}
	for _, w := range st.Waves {
		wi := workflows.RolloutWaveInput{MaxConcurrency: w.MaxConcurrency, Gate: w.Gate}
		for _, id := range w.Clusters {
			wi.Clusters = append(wi.Clusters, id.String())
		}
		in.Waves = append(in.Waves, wi)
	}
	opts := client.StartWorkflowOptions{ID: ro.WorkflowID, TaskQueue: s.TaskQueue,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE, WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(ro.TenantID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAProductID).ValueSet(ro.ProductID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SARolloutID).ValueSet(ro.ID.String()),
		)}
	if _, err := tc.ExecuteWorkflow(ctx, opts, workflows.RolloutWorkflow, in); err != nil {
		if s.Log != nil {
			s.Log.Error("start rollout workflow", "workflow_id", ro.WorkflowID, "err", err)
		}
		rctx := context.WithoutCancel(ctx)
		if rerr := s.Store.SaveRolloutState(rctx, ro.ID, store.RolloutUpdate{Status: models.RolloutAborted, Reason: "the workflow run could not be started", BudgetLeft: ro.BudgetLeft},
			func(ctx context.Context) error {
				return rec.Write(ctx, s.Store, audit.Entry{Action: "rollout.release", ResourceType: "rollout", ResourceID: ro.ID.String(),
					Summary: map[string]any{"workflow_id": ro.WorkflowID, "reason": "the workflow run could not be started"}})
			}); rerr != nil && s.Log != nil {
			s.Log.Error("record unstarted rollout", "rollout_id", ro.ID, "err", rerr)
		}
		return fault.Down("temporal_unavailable", "the rollout could not be started; try again")
	}
	return nil
}

// verbAllowed says in which states (status/pause reason) each verb applies.
func verbAllowed(verb string, ro models.Rollout) string {
	switch verb {
	case workflows.SignalRolloutPause:
		if ro.Status != models.RolloutProgressing {
			return "only a progressing rollout can be paused"
		}
	case workflows.SignalRolloutResume:
		if ro.Status != models.RolloutPaused || ro.PauseReason == models.PauseGate {
			return "only a rollout paused by hand or by its failure budget can be resumed (approve a gate)"
		}
	case workflows.SignalRolloutApprove:
		if ro.Status != models.RolloutPaused || ro.PauseReason != models.PauseGate {
			return "the rollout is not waiting at a gate"
		}
	case workflows.SignalRolloutAbort, workflows.SignalRolloutRetry:
		if ro.Status != models.RolloutProgressing && ro.Status != models.RolloutPaused {
			return "the rollout is " + ro.Status
		}
	}
	return ""
}

// Act sends a verb to the rollout's run, which applies it and audits it with actor and reason
// (the same handler as a Temporal CLI signal). What the recorded state does not allow is a 409
// here and sends nothing.
func (s *Service) Act(ctx context.Context, ro models.Rollout, verb, actor, reason, clusterID string) error {
	var v fault.Validator
	v.Check(len(reason) <= 1000, "reason", "at most 1000 characters")
	v.Check(verb != workflows.SignalRolloutAbort || strings.TrimSpace(reason) != "", "reason", "required to abort")
	if verb == workflows.SignalRolloutRetry {
		id, err := uuid.Parse(clusterID)
		v.Check(err == nil, "cluster_id", "the failed cluster to retry, a UUID")
		if err == nil && !v.Failed() {
			if err := s.checkRetry(ctx, ro, id); err != nil {
				return err
			}
		}
	}
	if err := v.Err(); err != nil {
		return err
	}
	if why := verbAllowed(verb, ro); why != "" {
		return fault.Conflicting("invalid_state", why, ro.Status)
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return errTemporalDown
	}
	err = tc.SignalWorkflow(ctx, ro.WorkflowID, "", verb, workflows.RolloutCommand{Actor: actor, Reason: reason, ClusterID: clusterID, Source: "rest"})
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return fault.Conflicting("invalid_state", "the rollout's run has ended", ro.Status)
	}
	if err != nil {
		return fault.Down("temporal_unavailable", "the command could not be sent; try again")
	}
	return nil
}

func (s *Service) checkRetry(ctx context.Context, ro models.Rollout, id uuid.UUID) error {
	cls, err := s.Store.ListRolloutClusters(ctx, ro.ID)
	if err != nil {
		return err
	}
	for _, c := range cls {
		if c.ClusterID == id {
			if c.State != models.RolloutClusterFailed && c.State != models.RolloutClusterTimedOut {
				return fault.Conflicting("invalid_state", "cluster "+id.String()+" is "+c.State+", not failed", c.State)
			}
			return nil
		}
	}
	return fault.ValidationFailed(fault.FieldError{Field: "cluster_id", Message: "not a target of this rollout"})
}
