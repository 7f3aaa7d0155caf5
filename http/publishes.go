package http

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/activities"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/publish"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// registerPublishes adds the deployment layer: product publishes and their actions.
func (a *API) registerPublishes(g *echo.Group) {
	publishes := collection{list: a.listPublishes, create: a.createPublish, get: a.getPublish, update: a.updatePublish, delete: a.deletePublish}
	// The publish use cases commit their claim with its audit row, then start the run.
	a.ownTransactions(publishes.register(g, "/product-publishes", RequireRole(models.RoleViewer), RequireRole(models.RoleAdmin))...)
	a.ownTransactions(
		g.POST("/product-publishes/:id/publish", a.publishAction, RequireRole(models.RoleAdmin)),
		g.POST("/product-publishes/:id/withdraw", a.withdrawAction, RequireRole(models.RoleAdmin)),
		g.POST("/product-publishes/:id/rollback", a.rollbackAction, RequireRole(models.RoleAdmin)),
	)
	g.GET("/product-publishes/:id/revisions/:revision", a.getPublishRevision, RequireRole(models.RoleViewer))
}

// hostnameRe is the DNS name rule tenant domains share with publishes.
var hostnameRe = models.HostnameRe

// publishView is a publish as the API shows it.
type publishView struct {
	models.ProductPublish
	WorkflowID *string `json:"workflow_id"`
}

func viewOf(p models.ProductPublish) publishView {
	if p.AuthConfig == nil {
		p.AuthConfig = models.JSONMap{}
	}
	if p.APIServiceIDs == nil {
		p.APIServiceIDs = models.UUIDArray{}
	}
	return publishView{ProductPublish: p, WorkflowID: p.WorkflowID}
}

// publishes is the publish use cases with the API's store, Temporal and settings.
func (a *API) publishes() *publish.Service {
	return &publish.Service{Store: a.store, Temporal: a.temporal, TaskQueue: a.settings.TaskQueue, Deadline: a.settings.PublishDeadline, Log: a.log}
}

func (a *API) createPublish(c echo.Context) error {
	var req publish.Changes
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	p, err := a.publishes().Create(c.Request().Context(), tenantOf(c).ID, principalOf(c).Email, req, a.auditRecord(c, nethttp.StatusCreated))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusCreated, viewOf(p))
}

func (a *API) loadPublish(c echo.Context) (models.ProductPublish, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.ProductPublish{}, err
	}
	p, err := a.store.GetPublish(c.Request().Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return p, NotFound("product publish")
	}
	return p, err
}

func (a *API) listPublishes(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	var f store.PublishFilter
	if f.ProductID, err = queryUUID(c, "product_id"); err != nil {
		return err
	}
	if f.ClusterID, err = queryUUID(c, "cluster_id"); err != nil {
		return err
	}
	if f.Environment, err = queryEnum(c, "environment", models.EnvDev, models.EnvStage, models.EnvProd); err != nil {
		return err
	}
	if f.Status, err = queryEnum(c, "status", models.PublishDraft, models.PublishDeploying, models.PublishPublished,
		models.PublishFailed, models.PublishWithdrawing, models.PublishWithdrawn); err != nil {
		return err
	}
	rows, next, err := a.store.ListPublishes(c.Request().Context(), tenantOf(c).ID, f, p)
	if err != nil {
		return err
	}
	out := make([]publishView, len(rows))
	for i, r := range rows {
		out[i] = viewOf(r)
	}
	return c.JSON(nethttp.StatusOK, listOf(out, next))
}

// timelineEntry is one line of a publish's history, from its events and its deliveries.
type timelineEntry struct {
	At       time.Time      `json:"at"`
	Type     string         `json:"type"`
	Revision int            `json:"revision"`
	Actor    string         `json:"actor"`
	AgentID  *uuid.UUID     `json:"agent_id"`
	Message  string         `json:"message"`
	Metadata models.JSONMap `json:"metadata"`
}

type publishDetail struct {
	publishView
	Revisions []models.PublishRevision `json:"revisions"`
	Results   []store.PublishResult    `json:"results"`
	Timeline  []timelineEntry          `json:"timeline"`
	WaitState *workflows.WaitState     `json:"wait_state"`
	// Sync is, per agent of the cluster, what its gateway serves of the publish against
	// what it should serve.
	Sync []agentPublishSync `json:"sync"`
}

func (a *API) getPublish(c echo.Context) error {
	p, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	revs, err := a.store.ListRevisions(ctx, p.ID)
	if err != nil {
		return err
	}
	results, err := a.store.PublishResults(ctx, p.ID)
	if err != nil {
		return err
	}
	events, err := a.store.ListPublishEvents(ctx, p.ID)
	if err != nil {
		return err
	}
	sync, err := a.publishSync(ctx, p.ClusterID, p.ID.String())
	if err != nil {
		return err
	}
	d := publishDetail{publishView: viewOf(p), Revisions: revs, Results: results, Timeline: []timelineEntry{}, Sync: sync}
	if d.Revisions == nil {
		d.Revisions = []models.PublishRevision{}
	}
	if d.Results == nil {
		d.Results = []store.PublishResult{}
	}
	for _, e := range events {
		d.Timeline = append(d.Timeline, timelineEntry{At: e.CreatedAt, Type: e.Type, Revision: e.Revision, Actor: e.Actor, AgentID: e.AgentID, Message: e.Message, Metadata: e.Metadata})
	}
	for _, r := range results {
		if r.SentAt != nil {
			id := r.AgentID
			d.Timeline = append(d.Timeline, timelineEntry{At: *r.SentAt, Type: models.PublishEventCommandDelivered, Revision: r.Revision, AgentID: &id,
				Message: fmt.Sprintf("%s command delivered to agent %s", r.Action, r.AgentName), Metadata: models.JSONMap{"command_id": r.CommandID.String()}})
		}
	}
	sort.SliceStable(d.Timeline, func(i, j int) bool { return d.Timeline[i].At.Before(d.Timeline[j].At) })
	if p.WorkflowID != nil {
		if tc, err := a.temporal.Client(); err == nil {
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if v, err := tc.QueryWorkflow(qctx, *p.WorkflowID, "", workflows.QueryStatus); err == nil {
				var ws workflows.WaitState
				if v.Get(&ws) == nil {
					d.WaitState = &ws
					// Presence is read now, not kept fresh by the run (which would cost it
					// history events for every refresh of a long wait).
					if ws.Phase == "waiting_for_result" {
						if pres, err := (&activities.Publish{Store: a.store}).ClusterPresence(ctx, p.ClusterID.String()); err == nil {
							d.WaitState.Presence = pres
						}
					}
				}
			}
		}
	}
	return c.JSON(nethttp.StatusOK, d)
}

func (a *API) getPublishRevision(c echo.Context) error {
	p, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(c.Param("revision"))
	if err != nil || n < 1 {
		return BadRequest("invalid_id", "the revision is a positive number", FieldError{Field: "revision", Message: "must be a positive integer"})
	}
	r, err := a.store.GetRevision(c.Request().Context(), p.ID, n)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("revision")
	}
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Checksum-SHA256", r.Checksum)
	return c.Blob(nethttp.StatusOK, echo.MIMEApplicationJSON, r.Snapshot)
}

func (a *API) updatePublish(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	var req publish.Changes
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	after, err := a.publishes().Update(c.Request().Context(), cur, req, a.auditRecord(c, nethttp.StatusOK))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, viewOf(after))
}

func (a *API) deletePublish(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	if err := a.publishes().Delete(c.Request().Context(), cur, a.auditRecord(c, nethttp.StatusNoContent)); err != nil {
		return err
	}
	return c.NoContent(nethttp.StatusNoContent)
}

func (a *API) publishAction(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	p, err := a.publishes().Start(c.Request().Context(), cur, principalOf(c).Email, a.auditRecord(c, nethttp.StatusAccepted))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusAccepted, viewOf(p))
}

func (a *API) rollbackAction(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	var req struct {
		Revision int `json:"revision"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	p, err := a.publishes().Rollback(c.Request().Context(), cur, req.Revision, principalOf(c).Email, a.auditRecord(c, nethttp.StatusAccepted))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusAccepted, viewOf(p))
}

func (a *API) withdrawAction(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	p, err := a.publishes().Withdraw(c.Request().Context(), cur, req.Reason, principalOf(c).Email, a.auditRecord(c, nethttp.StatusAccepted))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusAccepted, viewOf(p))
}

// agentSnapshot serves a revision snapshot to an agent of the publish's cluster; every other
// caller gets the same 404.
func (a *API) agentSnapshot(c echo.Context) error {
	ag := AgentOf(c)
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return NotFound("revision")
	}
	n, err := strconv.Atoi(c.Param("revision"))
	if err != nil {
		return NotFound("revision")
	}
	// Only a publish on the agent's own cluster: another cluster's is the same 404 as none.
	snap, sum, err := a.revisions.get(c.Request().Context(), revisionKey{ag.ClusterID, id, n}, func(ctx context.Context) ([]byte, string, error) {
		return a.store.ClusterRevision(ctx, ag.ClusterID, id, n)
	})
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("revision")
	}
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Checksum-SHA256", sum)
	return c.Blob(nethttp.StatusOK, echo.MIMEApplicationJSON, snap)
}
