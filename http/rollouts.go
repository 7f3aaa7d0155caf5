package http

import (
	"errors"
	nethttp "net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/rollout"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// registerRollouts adds progressive rollouts and their verbs.
func (a *API) registerRollouts(g *echo.Group) {
	g.GET("/rollouts", a.listRollouts, RequireRole(models.RoleViewer))
	g.GET("/rollouts/:id", a.getRollout, RequireRole(models.RoleViewer))
	// A rollout commits with its audit row and then starts its run; the verbs signal it (the
	// workflow audits them): they own their transactions.
	a.ownTransactions(g.POST("/rollouts", a.createRollout, RequireRole(models.RoleAdmin)))
	for _, verb := range workflows.RolloutVerbs {
		a.ownTransactions(g.POST("/rollouts/:id/"+verb, a.rolloutVerb(verb), RequireRole(models.RoleAdmin)))
	}
}

func (a *API) rollouts() *rollout.Service {
	return &rollout.Service{Store: a.store, Temporal: a.temporal, TaskQueue: a.settings.TaskQueue, Log: a.log}
}

// rolloutWave is one wave with its clusters as the API shows them.
type rolloutWave struct {
	Index          int                     `json:"index"`
	Gate           string                  `json:"gate"`
	MaxConcurrency int                     `json:"max_concurrency"`
	Percent        int                     `json:"percent"`
	Clusters       []models.RolloutCluster `json:"clusters"`
}

// rolloutCondition is the one condition that says whether the rollout is complete.
type rolloutCondition struct {
	Type    string `json:"type"`
	Status  bool   `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type rolloutView struct {
	models.Rollout
	Waves    []rolloutWave    `json:"waves"`
	Complete rolloutCondition `json:"complete"`
}

type rolloutSummary struct {
	models.Rollout
	Complete rolloutCondition `json:"complete"`
}

func completeOf(ro models.Rollout) rolloutCondition {
	c := rolloutCondition{Type: "complete", Status: !models.RolloutActive(ro.Status), Reason: ro.Status, Message: ro.StatusReason}
	if ro.Status == models.RolloutPaused {
		c.Reason = "paused_" + ro.PauseReason
	}
	return c
}

func (a *API) rolloutViewOf(c echo.Context, ro models.Rollout) (rolloutView, error) {
	cls, err := a.store.ListRolloutClusters(c.Request().Context(), ro.ID)
	if err != nil {
		return rolloutView{}, err
	}
	st := ro.Strategy.V
	v := rolloutView{Rollout: ro, Complete: completeOf(ro), Waves: make([]rolloutWave, len(st.Waves))}
	for i, w := range st.Waves {
		v.Waves[i] = rolloutWave{Index: i, Gate: w.Gate, MaxConcurrency: w.MaxConcurrency, Percent: w.Percent, Clusters: []models.RolloutCluster{}}
	}
	for _, cl := range cls {
		if cl.Wave < len(v.Waves) {
			v.Waves[cl.Wave].Clusters = append(v.Waves[cl.Wave].Clusters, cl)
		}
	}
	return v, nil
}

func (a *API) createRollout(c echo.Context) error {
	var req rollout.Request
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ro, err := a.rollouts().Create(c.Request().Context(), tenantOf(c).ID, principalOf(c).Email, req, a.auditRecord(c, nethttp.StatusCreated))
	if err != nil {
		return err
	}
	v, err := a.rolloutViewOf(c, ro)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusCreated, v)
}

func (a *API) loadRollout(c echo.Context) (models.Rollout, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.Rollout{}, err
	}
	ro, err := a.store.GetRollout(c.Request().Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return ro, NotFound("rollout")
	}
	return ro, err
}

func (a *API) getRollout(c echo.Context) error {
	ro, err := a.loadRollout(c)
	if err != nil {
		return err
	}
	v, err := a.rolloutViewOf(c, ro)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, v)
}

func (a *API) listRollouts(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	var f store.RolloutFilter
	if f.ProductID, err = queryUUID(c, "product_id"); err != nil {
		return err
	}
	if f.Status, err = queryEnum(c, "status", models.RolloutProgressing, models.RolloutPaused, models.RolloutSucceeded,
		models.RolloutAborting, models.RolloutAborted, models.RolloutSuperseded); err != nil {
		return err
	}
	rows, next, err := a.store.ListRollouts(c.Request().Context(), tenantOf(c).ID, f, p)
	if err != nil {
		return err
	}
	out := make([]rolloutSummary, len(rows))
	for i, r := range rows {
		out[i] = rolloutSummary{Rollout: r, Complete: completeOf(r)}
	}
	return c.JSON(nethttp.StatusOK, listOf(out, next))
}

// rolloutVerb sends one verb to the rollout's run; the run's handler applies and audits it, so
// the request writes no audit row of its own. It answers 202 with the rollout as it is a moment
// later (the run applies commands within milliseconds when its worker is up).
func (a *API) rolloutVerb(verb string) echo.HandlerFunc {
	return func(c echo.Context) error {
		ro, err := a.loadRollout(c)
		if err != nil {
			return err
		}
		var req struct {
			Reason    string `json:"reason"`
			ClusterID string `json:"cluster_id"`
		}
		if c.Request().ContentLength != 0 {
			if err := bindJSON(c, &req); err != nil {
				return err
			}
		}
		ctx := c.Request().Context()
		if err := a.rollouts().Act(ctx, ro, verb, principalOf(c).Email, req.Reason, req.ClusterID); err != nil {
			return err
		}
		SkipAudit(c)
		before := ro.UpdatedAt
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
			cur, err := a.store.GetRollout(ctx, ro.TenantID, ro.ID)
			if err == nil && cur.UpdatedAt.After(before) {
				ro = cur
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		v, err := a.rolloutViewOf(c, ro)
		if err != nil {
			return err
		}
		return c.JSON(nethttp.StatusAccepted, v)
	}
}
