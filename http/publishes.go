package http

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imprun/imprun-server/activities"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// registerPublishes adds the deployment layer: product publishes and their actions.
func (a *API) registerPublishes(g *echo.Group) {
	g.GET("/product-publishes", a.listPublishes, RequireRole(models.RoleViewer))
	g.POST("/product-publishes", a.createPublish, RequireRole(models.RoleAdmin))
	g.GET("/product-publishes/:id", a.getPublish, RequireRole(models.RoleViewer))
	g.PATCH("/product-publishes/:id", a.updatePublish, RequireRole(models.RoleAdmin))
	g.DELETE("/product-publishes/:id", a.deletePublish, RequireRole(models.RoleAdmin))
	g.POST("/product-publishes/:id/publish", a.publishAction, RequireRole(models.RoleAdmin))
	g.POST("/product-publishes/:id/withdraw", a.withdrawAction, RequireRole(models.RoleAdmin))
	g.POST("/product-publishes/:id/rollback", a.rollbackAction, RequireRole(models.RoleAdmin))
	g.GET("/product-publishes/:id/revisions/:revision", a.getPublishRevision, RequireRole(models.RoleViewer))
}

// publishRequest is the body of create (all fields) and PATCH (any subset).
type publishRequest struct {
	ProductID        *string         `json:"product_id"`
	ClusterID        *string         `json:"cluster_id"`
	GatewayID        *string         `json:"gateway_id"`
	APIServices      *[]string       `json:"api_services"`
	Environment      *string         `json:"environment"`
	Hostname         *string         `json:"hostname"`
	AuthMode         *string         `json:"auth_mode"`
	AuthConfig       *map[string]any `json:"auth_config"`
	Visibility       *string         `json:"visibility"`
	ApprovalRequired *bool           `json:"approval_required"`
	DeadlineSeconds  *int            `json:"deadline_seconds"`
	Draft            bool            `json:"draft"`
}

var hostnameRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

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

// applyPublishRequest validates req against the tenant's catalog and the clusters and writes
// it into p. create demands the required fields.
func (a *API) applyPublishRequest(ctx context.Context, tenantID uuid.UUID, req publishRequest, p *models.ProductPublish, create bool) error {
	if create && (req.ClusterID == nil || *req.ClusterID == "") {
		return BadRequest("cluster_required", "a publish needs the cluster it deploys to", FieldError{Field: "cluster_id", Message: "required"})
	}
	var v validator
	parseID := func(field string, s *string, dst *uuid.UUID) bool {
		if s == nil {
			if create {
				v.add(field, "required")
			}
			return false
		}
		id, err := uuid.Parse(*s)
		if err != nil {
			v.add(field, "must be a UUID")
			return false
		}
		*dst = id
		return true
	}
	productSet := parseID("product_id", req.ProductID, &p.ProductID)
	clusterSet := parseID("cluster_id", req.ClusterID, &p.ClusterID)
	gatewaySet := parseID("gateway_id", req.GatewayID, &p.GatewayID)
	if req.Environment != nil {
		p.Environment = *req.Environment
	}
	if create || req.Environment != nil {
		v.check(p.Environment == models.EnvDev || p.Environment == models.EnvStage || p.Environment == models.EnvProd, "environment", "must be dev, stage or prod")
	}
	if req.Hostname != nil {
		p.Hostname = strings.ToLower(*req.Hostname)
		v.check(len(p.Hostname) <= 253 && hostnameRe.MatchString(p.Hostname), "hostname", "must be a DNS name")
	}
	if create && p.Hostname == "" {
		v.add("hostname", "required")
	}
	if req.AuthMode != nil {
		p.AuthMode = *req.AuthMode
	}
	if p.AuthMode == "" {
		p.AuthMode = models.AuthNone
	}
	if req.AuthConfig != nil {
		p.AuthConfig = models.JSONMap(*req.AuthConfig)
	}
	validateAuth(&v, p.AuthMode, p.AuthConfig)
	if req.Visibility != nil {
		p.Visibility = *req.Visibility
	}
	if p.Visibility == "" {
		p.Visibility = models.VisibilityPublic
	}
	v.check(p.Visibility == models.VisibilityPublic || p.Visibility == models.VisibilityPrivate, "visibility", "must be public or private")
	if req.ApprovalRequired != nil {
		p.ApprovalRequired = *req.ApprovalRequired
	}
	if req.DeadlineSeconds != nil {
		d := *req.DeadlineSeconds
		v.check(d >= 10 && d <= 30*24*3600, "deadline_seconds", "from 10 seconds to 30 days")
		p.DeadlineSeconds = &d
	}
	if err := v.err(); err != nil {
		return err
	}

	// References: another tenant's row is the same 422 as a row that does not exist.
	st := a.store
	if productSet || create {
		prod, err := st.GetProduct(ctx, tenantID, p.ProductID)
		if errors.Is(err, store.ErrNotFound) {
			v.add("product_id", "no such product")
		} else if err != nil {
			return err
		} else {
			if prod.Status != models.ProductActive {
				v.add("product_id", "the product must be active (it is "+prod.Status+")")
			}
			if req.APIServices == nil && (create || productSet) {
				p.APIServiceIDs = models.UUIDArray(prod.APIServices)
			}
		}
	}
	if req.APIServices != nil {
		ids := make(models.UUIDArray, 0, len(*req.APIServices))
		seen := map[uuid.UUID]bool{}
		for i, s := range *req.APIServices {
			id, err := uuid.Parse(s)
			if err != nil || seen[id] {
				v.add("api_services["+strconv.Itoa(i)+"]", "must be a distinct UUID")
				continue
			}
			seen[id] = true
			ids = append(ids, id)
		}
		p.APIServiceIDs = ids
	}
	if prod, err := st.GetProduct(ctx, tenantID, p.ProductID); err == nil {
		in := map[uuid.UUID]bool{}
		for _, id := range prod.APIServices {
			in[id] = true
		}
		for i, id := range p.APIServiceIDs {
			if !in[id] {
				v.add("api_services["+strconv.Itoa(i)+"]", "not a service of the product")
			}
		}
		if len(p.APIServiceIDs) == 0 {
			v.add("api_services", "at least one service")
		}
	}
	var gatewayClass string
	var template *models.Gateway
	if gatewaySet || create {
		gw, err := st.GetGateway(ctx, tenantID, p.GatewayID)
		if errors.Is(err, store.ErrNotFound) {
			v.add("gateway_id", "no such gateway template")
		} else if err != nil {
			return err
		} else {
			gatewayClass, template = gw.GatewayClass, &gw
		}
	}
	if clusterSet || create {
		cl, err := st.GetCluster(ctx, p.ClusterID)
		if errors.Is(err, store.ErrNotFound) {
			v.add("cluster_id", "no such cluster")
		} else if err != nil {
			return err
		} else {
			if template == nil {
				if gw, err := st.GetGateway(ctx, tenantID, p.GatewayID); err == nil {
					gatewayClass, template = gw.GatewayClass, &gw
				}
			}
			if gatewayClass != "" && !cl.Capabilities.V.Supports(gatewayClass) {
				v.add("gateway_id", "the cluster does not support gateway class "+gatewayClass)
			}
			// The hostname must be the tenant's, and not served by another publish of the
			// cluster (route hostnames and the claim itself are settled when the revision is
			// frozen; this is the early answer).
			if notOwned, err := st.HostsNotOwned(ctx, tenantID, []string{p.Hostname}); err != nil {
				return err
			} else if len(notOwned) > 0 {
				v.add("hostname", "not under a domain your tenant owns (operators grant domains)")
			} else if template != nil {
				var ports []int
				for _, l := range template.Listeners.V {
					ports = append(ports, l.Port)
				}
				taken, err := st.HostTakenElsewhere(ctx, p.ClusterID, p.ID, p.Hostname, ports)
				if err != nil {
					return err
				}
				if taken {
					return Conflict("hostname_taken", "hostname "+p.Hostname+" is already served on this cluster", "")
				}
			}
			// Every backend endpoint must be one the cluster's egress policy allows: the
			// gateway is shared, and its network is not the tenant's to reach into.
			bad, err := st.EgressViolations(ctx, cl.Cluster, tenantID, p.APIServiceIDs)
			if err != nil {
				return err
			}
			for _, b := range bad {
				v.add("api_services", b)
			}
			if err := v.err(); err != nil {
				return err
			}
			if cl.Status == models.ClusterMaintenance {
				return Conflict("cluster_in_maintenance", "cluster "+cl.Name+" is in maintenance: it takes no new deploys", cl.Status)
			}
		}
	}
	return v.err()
}

func validateAuth(v *validator, mode string, cfg models.JSONMap) {
	switch mode {
	case models.AuthNone, models.AuthAPIKey:
		for k := range cfg {
			if mode == models.AuthAPIKey && k == "header" {
				if s, ok := cfg[k].(string); !ok || s == "" || len(s) > 100 {
					v.add("auth_config.header", "a header name")
				}
				continue
			}
			v.add("auth_config."+k, "unknown field for auth mode "+mode)
		}
	case models.AuthOAuth2:
		iss, _ := cfg["issuer"].(string)
		u, err := url.Parse(iss)
		v.check(err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "", "auth_config.issuer", "required: the issuer URL")
		aud, _ := cfg["audience"].(string)
		v.check(aud != "", "auth_config.audience", "required")
		for k, val := range cfg {
			switch k {
			case "issuer", "audience":
			case "scopes":
				list, ok := val.([]any)
				good := ok
				for _, s := range list {
					if _, isStr := s.(string); !isStr {
						good = false
					}
				}
				v.check(good, "auth_config.scopes", "a list of strings")
			default:
				v.add("auth_config."+k, "unknown field for auth mode oauth2")
			}
		}
	default:
		v.add("auth_mode", "must be none, api-key or oauth2")
	}
}

func (a *API) createPublish(c echo.Context) error {
	var req publishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	t := tenantOf(c)
	p := models.ProductPublish{TenantID: t.ID, CreatedBy: principalOf(c).Email}
	if err := a.applyPublishRequest(c.Request().Context(), t.ID, req, &p, true); err != nil {
		return err
	}
	if !req.Draft {
		if _, err := a.temporal.Client(); err != nil {
			return Unavailable("temporal_unavailable", "the workflow service is not reachable; save a draft or try again")
		}
	}
	if err := a.store.CreatePublish(c.Request().Context(), &p); err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "product_publish.create", ResourceType: "product_publish", ResourceID: p.ID.String(), ResourceName: p.Hostname,
		Summary: map[string]any{"product_id": p.ProductID, "cluster_id": p.ClusterID, "environment": p.Environment, "draft": req.Draft}})
	if req.Draft {
		return c.JSON(nethttp.StatusCreated, viewOf(p))
	}
	started, err := a.startPublish(c, p, 0)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusCreated, viewOf(started))
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
	d := publishDetail{publishView: viewOf(p), Revisions: revs, Results: results, Timeline: []timelineEntry{}}
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
	var req publishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if req.Draft {
		return ValidationFailed(FieldError{Field: "draft", Message: "only on create"})
	}
	if cur.Status != models.PublishDraft || cur.WorkflowID != nil {
		return Conflict("invalid_state", "only a DRAFT publish can be edited", cur.Status)
	}
	t := tenantOf(c)
	// Validate on a copy first so a bad body changes nothing, then write under the row lock.
	probe := cur
	if err := a.applyPublishRequest(c.Request().Context(), t.ID, req, &probe, false); err != nil {
		return err
	}
	after, err := a.store.UpdateDraft(c.Request().Context(), t.ID, cur.ID, func(p *models.ProductPublish) error {
		keep := p.CreatedBy
		*p = probe
		p.CreatedBy = keep
		return nil
	})
	var se *store.StateError
	if errors.As(err, &se) {
		return Conflict("invalid_state", se.Detail, se.Status)
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "product_publish.update", ResourceType: "product_publish", ResourceID: after.ID.String(), ResourceName: after.Hostname})
	return c.JSON(nethttp.StatusOK, viewOf(after))
}

func (a *API) deletePublish(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	_, err = a.store.DeletePublish(c.Request().Context(), tenantOf(c).ID, cur.ID)
	var se *store.StateError
	if errors.As(err, &se) {
		return Conflict("invalid_state", se.Detail, se.Status)
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "product_publish.delete", ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname})
	return c.NoContent(nethttp.StatusNoContent)
}

func (a *API) publishAction(c echo.Context) error {
	cur, err := a.loadPublish(c)
	if err != nil {
		return err
	}
	p, err := a.startPublish(c, cur, 0)
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
	if req.Revision < 1 || req.Revision >= cur.CurrentRevision {
		return ValidationFailed(FieldError{Field: "revision", Message: fmt.Sprintf("an earlier revision, from 1 to %d", cur.CurrentRevision-1)})
	}
	if _, err := a.store.GetRevision(c.Request().Context(), cur.ID, req.Revision); err != nil {
		return ValidationFailed(FieldError{Field: "revision", Message: "no such revision"})
	}
	p, err := a.startPublish(c, cur, req.Revision)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusAccepted, viewOf(p))
}

// startPublish claims the publish for a new revision's run and starts PublishWorkflow.
func (a *API) startPublish(c echo.Context, cur models.ProductPublish, rollbackOf int) (models.ProductPublish, error) {
	tc, err := a.temporal.Client()
	if err != nil {
		return cur, Unavailable("temporal_unavailable", "the workflow service is not reachable; try again")
	}
	ctx := c.Request().Context()
	actor := principalOf(c).Email
	rev := cur.CurrentRevision + 1
	wid := workflows.PublishWorkflowID(cur.ID.String(), rev)
	statuses := []string{models.PublishDraft, models.PublishFailed, models.PublishWithdrawn}
	evType, msg := models.PublishEventPublishRequested, fmt.Sprintf("publish of revision %d requested", rev)
	if rollbackOf > 0 {
		statuses = []string{models.PublishPublished, models.PublishFailed, models.PublishWithdrawn}
		evType, msg = models.PublishEventRollbackRequested, fmt.Sprintf("rollback to revision %d requested (as revision %d)", rollbackOf, rev)
	}
	expect := cur.CurrentRevision
	before, err := a.store.ClaimPublish(ctx, cur.TenantID, cur.ID, store.Claim{WorkflowID: wid, Statuses: statuses, ExpectRevision: &expect,
		Event: models.PublishEvent{Type: evType, Revision: rev, Actor: actor, Message: msg, Metadata: models.JSONMap{"workflow_id": wid}}})
	var se *store.StateError
	if errors.As(err, &se) {
		return cur, Conflict("invalid_state", se.Detail, se.Status)
	}
	if err != nil {
		return cur, err
	}
	deadline := a.settings.PublishDeadline
	if before.DeadlineSeconds != nil {
		deadline = time.Duration(*before.DeadlineSeconds) * time.Second
	}
	in := workflows.PublishInput{PublishID: cur.ID.String(), TenantID: cur.TenantID.String(), ClusterID: cur.ClusterID.String(),
		ProductID: cur.ProductID.String(), Revision: rev, RollbackOf: rollbackOf, Actor: actor, Deadline: deadline}
	if err := a.startRun(ctx, tc, wid, workflows.PublishWorkflow, in, before); err != nil {
		_ = a.store.ReleasePublish(context.WithoutCancel(ctx), cur.ID, wid, nil)
		return cur, err
	}
	action := "product_publish.publish"
	if rollbackOf > 0 {
		action = "product_publish.rollback"
	}
	Audit(c, AuditEntry{Action: action, ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname,
		Summary: map[string]any{"revision": rev, "rollback_of": rollbackOf, "workflow_id": wid}})
	before.WorkflowID = &wid
	return before, nil
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
	var v validator
	v.check(strings.TrimSpace(req.Reason) != "" && len(req.Reason) <= 1000, "reason", "required, at most 1000 characters")
	if err := v.err(); err != nil {
		return err
	}
	tc, err := a.temporal.Client()
	if err != nil {
		return Unavailable("temporal_unavailable", "the workflow service is not reachable; try again")
	}
	ctx := c.Request().Context()
	actor := principalOf(c).Email
	wid := workflows.WithdrawWorkflowID(cur.ID.String(), cur.CurrentRevision)
	before, err := a.store.ClaimPublish(ctx, cur.TenantID, cur.ID, store.Claim{WorkflowID: wid,
		Statuses:       []string{models.PublishDeploying, models.PublishPublished, models.PublishFailed},
		TakeOverPrefix: "publish/",
		Event: models.PublishEvent{Type: models.PublishEventWithdrawRequested, Revision: cur.CurrentRevision, Actor: actor,
			Message: "withdraw requested: " + req.Reason, Metadata: models.JSONMap{"workflow_id": wid}}})
	var se *store.StateError
	if errors.As(err, &se) {
		return Conflict("invalid_state", se.Detail, se.Status)
	}
	if err != nil {
		return err
	}
	deadline := a.settings.PublishDeadline
	if before.DeadlineSeconds != nil {
		deadline = time.Duration(*before.DeadlineSeconds) * time.Second
	}
	in := workflows.WithdrawInput{PublishID: cur.ID.String(), TenantID: cur.TenantID.String(), ClusterID: cur.ClusterID.String(),
		ProductID: cur.ProductID.String(), Revision: cur.CurrentRevision, Reason: req.Reason, Actor: actor, Deadline: deadline}
	if before.WorkflowID != nil {
		in.CancelWorkflowID = *before.WorkflowID
	}
	if err := a.startRun(ctx, tc, wid, workflows.WithdrawWorkflow, in, before); err != nil {
		_ = a.store.ReleasePublish(context.WithoutCancel(ctx), cur.ID, wid, before.WorkflowID)
		return err
	}
	Audit(c, AuditEntry{Action: "product_publish.withdraw", ResourceType: "product_publish", ResourceID: cur.ID.String(), ResourceName: cur.Hostname,
		Summary: map[string]any{"revision": cur.CurrentRevision, "reason": req.Reason, "workflow_id": wid, "cancelled_deploy": in.CancelWorkflowID}})
	before.WorkflowID = &wid
	return c.JSON(nethttp.StatusAccepted, viewOf(before))
}

// startRun starts a workflow with the publish's search attributes. The id is deterministic; a
// run with that id already in flight is a 409.
func (a *API) startRun(ctx context.Context, tc client.Client, wid string, wf any, in any, p models.ProductPublish) error {
	opts := client.StartWorkflowOptions{
		ID:                                       wid,
		TaskQueue:                                a.settings.TaskQueue,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(p.TenantID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAClusterID).ValueSet(p.ClusterID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAProductID).ValueSet(p.ProductID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAPublishID).ValueSet(p.ID.String()),
		),
	}
	_, err := tc.ExecuteWorkflow(ctx, opts, wf, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return Conflict("already_running", "a run "+wid+" is already in flight", p.Status)
	}
	if err != nil {
		a.log.Error("start workflow", "workflow_id", wid, "err", err)
		return Unavailable("temporal_unavailable", "the workflow could not be started; try again")
	}
	return nil
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
	p, err := a.store.GetPublishByID(c.Request().Context(), id)
	if err != nil || p.ClusterID != ag.ClusterID {
		return NotFound("revision")
	}
	r, err := a.store.GetRevision(c.Request().Context(), p.ID, n)
	if err != nil {
		return NotFound("revision")
	}
	c.Response().Header().Set("X-Checksum-SHA256", r.Checksum)
	return c.Blob(nethttp.StatusOK, echo.MIMEApplicationJSON, r.Snapshot)
}
