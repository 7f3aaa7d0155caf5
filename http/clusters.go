package http

import (
	"errors"
	"fmt"
	nethttp "net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/egress"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// registerClusters adds the operator's physical layer: clusters, registration tokens, agents.
func (a *API) registerClusters(g *echo.Group) {
	g.POST("/clusters", a.createCluster)
	g.GET("/clusters", a.listClusters)
	g.GET("/clusters/:id", a.getCluster)
	g.GET("/clusters/:id/sync", a.getClusterSync)
	g.PATCH("/clusters/:id", a.updateCluster)
	g.DELETE("/clusters/:id", a.deleteCluster)
	g.POST("/clusters/:id/maintenance", a.setMaintenance)
	g.POST("/clusters/:id/registration-tokens", a.createRegistrationToken)
	g.GET("/clusters/:id/registration-tokens", a.listRegistrationTokens)
	g.POST("/clusters/:id/registration-tokens/:token_id/revoke", a.revokeRegistrationToken)
	g.GET("/agents", a.listAgents)
	g.GET("/agents/:id", a.getAgent)
	g.GET("/agents/:id/events", a.listAgentEvents)
	g.POST("/agents/:id/rotate-token", a.rotateAgentToken)
	g.POST("/agents/:id/revoke", a.revokeAgent)
	g.DELETE("/agents/:id", a.deleteAgent)
}

var (
	gatewayClasses = map[string]bool{"envoy-gateway": true, "nginx": true}
)

type clusterRequest struct {
	Name          *string              `json:"name"`
	Description   *string              `json:"description"`
	Region        *string              `json:"region"`
	CloudProvider *string              `json:"cloud_provider"`
	Capabilities  *models.Capabilities `json:"capabilities"`
	EgressAllow   *models.EgressAllow  `json:"egress_allow"`
	Metadata      map[string]any       `json:"metadata"`
	DriftPolicy   *string              `json:"drift_policy"`
}

// validateEgressAllow checks a cluster's egress allowlist and fills in empty lists.
func validateEgressAllow(v *validator, e *models.EgressAllow) {
	if e.CIDRs == nil {
		e.CIDRs = []string{}
	}
	if e.NameSuffixes == nil {
		e.NameSuffixes = []string{}
	}
	v.check(len(e.CIDRs) <= maxListItems, "egress_allow.cidrs", fmt.Sprintf("at most %d", maxListItems))
	v.check(len(e.NameSuffixes) <= maxListItems, "egress_allow.name_suffixes", fmt.Sprintf("at most %d", maxListItems))
	for i, c := range e.CIDRs {
		if _, err := egress.Parse([]string{c}, nil); err != nil {
			v.add("egress_allow.cidrs["+itoa(i)+"]", "an address or CIDR range, such as 127.0.0.0/8")
		}
	}
	for i, n := range e.NameSuffixes {
		if _, err := egress.Parse(nil, []string{n}); err != nil || len(n) > 253 {
			v.add("egress_allow.name_suffixes["+itoa(i)+"]", "a host name, or a suffix starting with a dot")
		}
	}
}

func validateCapabilities(v *validator, c *models.Capabilities) {
	seen := map[string]bool{}
	for i, g := range c.GatewayClasses {
		f := "capabilities.gateway_classes[" + itoa(i) + "].name"
		if !gatewayClasses[g.Name] {
			v.add(f, "must be envoy-gateway or nginx")
		}
		if seen[g.Name] {
			v.add(f, "listed twice")
		}
		seen[g.Name] = true
	}
}

func (a *API) createCluster(c echo.Context) error {
	var req clusterRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var v validator
	v.check(req.Name != nil && k8sNameRe.MatchString(*req.Name), "name", "required: a DNS label (lower-case letters, digits, dashes; 1-63)")
	v.check(req.Region != nil && strings.TrimSpace(*req.Region) != "" && len(*req.Region) <= 100, "region", "required, at most 100 characters")
	if req.Description != nil {
		v.check(len(*req.Description) <= 500, "description", "at most 500 characters")
	}
	if req.CloudProvider != nil {
		v.check(len(*req.CloudProvider) <= 50, "cloud_provider", "at most 50 characters")
	}
	caps := models.Capabilities{GatewayClasses: []models.GatewayClassCapability{}}
	if req.Capabilities != nil {
		caps = *req.Capabilities
		if caps.GatewayClasses == nil {
			caps.GatewayClasses = []models.GatewayClassCapability{}
		}
		validateCapabilities(&v, &caps)
	}
	egressAllow := models.EgressAllow{}
	if req.EgressAllow != nil {
		egressAllow = *req.EgressAllow
	}
	validateEgressAllow(&v, &egressAllow)
	if err := v.err(); err != nil {
		return err
	}
	cl := models.Cluster{Name: *req.Name, Region: strings.TrimSpace(*req.Region), Status: models.ClusterPending,
		Capabilities: models.JSON[models.Capabilities]{V: caps}, EgressAllow: models.JSON[models.EgressAllow]{V: egressAllow},
		Metadata: models.JSONMap(req.Metadata)}
	if cl.Metadata == nil {
		cl.Metadata = models.JSONMap{}
	}
	if req.Description != nil {
		cl.Description = *req.Description
	}
	if req.CloudProvider != nil {
		cl.CloudProvider = *req.CloudProvider
	}
	err := a.store.CreateCluster(c.Request().Context(), &cl)
	if errors.Is(err, store.ErrConflict) {
		return Conflict("name_taken", "a cluster named "+cl.Name+" exists", "")
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "cluster.create", ResourceType: "cluster", ResourceID: cl.ID.String(), ResourceName: cl.Name,
		Summary: map[string]any{"region": cl.Region, "cloud_provider": cl.CloudProvider, "egress_allow": egressAllow}})
	return c.JSON(nethttp.StatusCreated, store.ClusterView{Cluster: cl})
}

func (a *API) listClusters(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	st, err := queryEnum(c, "status", models.ClusterPending, models.ClusterActive, models.ClusterInactive, models.ClusterMaintenance)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListClusters(c.Request().Context(), store.ClusterFilter{Status: st, Region: c.QueryParam("region")}, p)
	if err != nil {
		return err
	}
	out := make([]clusterWithSync, 0, len(rows))
	for _, r := range rows {
		cs, err := a.withSync(c.Request().Context(), r, false)
		if err != nil {
			return err
		}
		out = append(out, cs)
	}
	return c.JSON(nethttp.StatusOK, listOf(out, next))
}

func (a *API) loadCluster(c echo.Context) (store.ClusterView, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return store.ClusterView{}, err
	}
	cl, err := a.store.GetCluster(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return cl, NotFound("cluster")
	}
	return cl, err
}

func (a *API) getCluster(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	out, err := a.withSync(c.Request().Context(), cl, true)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, out)
}

func (a *API) updateCluster(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	var req clusterRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var v validator
	if req.Name != nil && *req.Name != cl.Name {
		v.add("name", "is immutable")
	}
	if req.Region != nil && *req.Region != cl.Region {
		v.add("region", "is immutable")
	}
	changes := map[string]any{}
	if req.Description != nil {
		v.check(len(*req.Description) <= 500, "description", "at most 500 characters")
		changes["description"] = *req.Description
	}
	if req.CloudProvider != nil {
		v.check(len(*req.CloudProvider) <= 50, "cloud_provider", "at most 50 characters")
		changes["cloud_provider"] = *req.CloudProvider
	}
	if req.Capabilities != nil {
		caps := *req.Capabilities
		if caps.GatewayClasses == nil {
			caps.GatewayClasses = []models.GatewayClassCapability{}
		}
		validateCapabilities(&v, &caps)
		changes["capabilities"] = models.JSON[models.Capabilities]{V: caps}
	}
	summary := map[string]any{}
	if req.EgressAllow != nil {
		e := *req.EgressAllow
		validateEgressAllow(&v, &e)
		changes["egress_allow"] = models.JSON[models.EgressAllow]{V: e}
		// Who opened which ranges of a shared cluster's network is worth the audit log's detail.
		summary["egress_allow_before"], summary["egress_allow"] = cl.EgressAllow.V, e
	}
	if req.Metadata != nil {
		changes["metadata"] = models.JSONMap(req.Metadata)
	}
	if req.DriftPolicy != nil {
		p := *req.DriftPolicy
		v.check(p == models.DriftOff || p == models.DriftReport || p == models.DriftRepair, "drift_policy", "must be off, report or repair")
		changes["drift_policy"] = p
		summary["drift_policy_before"], summary["drift_policy"] = cl.DriftPolicy, p
	}
	if err := v.err(); err != nil {
		return err
	}
	if len(changes) > 0 {
		if err := a.store.UpdateCluster(c.Request().Context(), cl.ID, changes); err != nil {
			return err
		}
	}
	after, err := a.store.GetCluster(c.Request().Context(), cl.ID)
	if err != nil {
		return err
	}
	fields := make([]string, 0, len(changes))
	for k := range changes {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	summary["changed"] = fields
	Audit(c, AuditEntry{Action: "cluster.update", ResourceType: "cluster", ResourceID: cl.ID.String(), ResourceName: cl.Name,
		Summary: summary})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteCluster(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	err = a.store.DeleteCluster(c.Request().Context(), cl.ID)
	if errors.Is(err, store.ErrClusterInUse) {
		return Conflict("cluster_in_use", "the cluster still has agents or publishes; revoke and delete the agents and withdraw and delete the publishes first", cl.Status)
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "cluster.delete", ResourceType: "cluster", ResourceID: cl.ID.String(), ResourceName: cl.Name})
	return c.NoContent(nethttp.StatusNoContent)
}

func (a *API) setMaintenance(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	var req struct {
		Enabled *bool  `json:"enabled"`
		Reason  string `json:"reason"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var v validator
	v.check(req.Enabled != nil, "enabled", "required")
	v.check(len(req.Reason) <= 500, "reason", "at most 500 characters")
	if err := v.err(); err != nil {
		return err
	}
	status := models.ClusterMaintenance
	if !*req.Enabled {
		// Leaving maintenance: active if an agent is connected, else inactive (or pending
		// when no agent ever registered).
		switch {
		case cl.ConnectedAgents > 0:
			status = models.ClusterActive
		case cl.AgentCount > 0:
			status = models.ClusterInactive
		default:
			status = models.ClusterPending
		}
	}
	if err := a.store.UpdateCluster(c.Request().Context(), cl.ID, map[string]any{"status": status}); err != nil {
		return err
	}
	action := "cluster.maintenance_on"
	if !*req.Enabled {
		action = "cluster.maintenance_off"
	}
	Audit(c, AuditEntry{Action: action, ResourceType: "cluster", ResourceID: cl.ID.String(), ResourceName: cl.Name,
		Summary: map[string]any{"status": map[string]string{"before": cl.Status, "after": status}, "reason": req.Reason}})
	after, err := a.store.GetCluster(c.Request().Context(), cl.ID)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, after)
}

// registrationTokenCreated is the only response that ever holds a registration token.
type registrationTokenCreated struct {
	models.RegistrationToken
	Token string `json:"token"`
	State string `json:"state"`
}

type registrationTokenView struct {
	models.RegistrationToken
	State string `json:"state"`
}

// maxRegistrationTokenTTL bounds how long a token may live: it is a bearer secret.
const maxRegistrationTokenTTL = 7 * 24 * time.Hour

func (a *API) createRegistrationToken(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	var req struct {
		TTLSeconds  *int64 `json:"ttl_seconds"`
		MaxUses     *int   `json:"max_uses"`
		Description string `json:"description"`
	}
	if c.Request().ContentLength != 0 {
		if err := bindJSON(c, &req); err != nil {
			return err
		}
	}
	ttl := a.settings.RegistrationTokenTTL
	var v validator
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
		v.check(*req.TTLSeconds >= 60 && ttl <= maxRegistrationTokenTTL, "ttl_seconds", "from 60 seconds to 7 days")
	}
	uses := 1
	if req.MaxUses != nil {
		uses = *req.MaxUses
		v.check(uses >= 1 && uses <= 1000, "max_uses", "from 1 to 1000")
	}
	v.check(len(req.Description) <= 500, "description", "at most 500 characters")
	if err := v.err(); err != nil {
		return err
	}
	secret := newRegistrationSecret()
	t := models.RegistrationToken{ClusterID: cl.ID, TokenHash: hashSecret(secret), Prefix: secret[:12], Description: req.Description,
		MaxUses: uses, ExpiresAt: time.Now().UTC().Add(ttl).Truncate(time.Microsecond), CreatedBy: principalOf(c).Email}
	if err := a.store.CreateRegistrationToken(c.Request().Context(), &t); err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "registration_token.create", ResourceType: "registration_token", ResourceID: t.ID.String(), ResourceName: t.Prefix,
		Summary: map[string]any{"cluster": cl.Name, "max_uses": uses, "expires_at": t.ExpiresAt}})
	ReplayWithout(c, registrationTokenView{RegistrationToken: t, State: t.State(time.Now())})
	return c.JSON(nethttp.StatusCreated, registrationTokenCreated{RegistrationToken: t, Token: secret, State: t.State(time.Now())})
}

func (a *API) listRegistrationTokens(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListRegistrationTokens(c.Request().Context(), cl.ID, p)
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]registrationTokenView, len(rows))
	for i, r := range rows {
		out[i] = registrationTokenView{RegistrationToken: r, State: r.State(now)}
	}
	return c.JSON(nethttp.StatusOK, listOf(out, next))
}

func (a *API) revokeRegistrationToken(c echo.Context) error {
	cl, err := a.loadCluster(c)
	if err != nil {
		return err
	}
	tid, err := pathUUID(c, "token_id")
	if err != nil {
		return err
	}
	t, err := a.store.RevokeRegistrationToken(c.Request().Context(), cl.ID, tid)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("registration token")
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "registration_token.revoke", ResourceType: "registration_token", ResourceID: t.ID.String(), ResourceName: t.Prefix,
		Summary: map[string]any{"cluster": cl.Name}})
	return c.JSON(nethttp.StatusOK, registrationTokenView{RegistrationToken: t, State: t.State(time.Now())})
}

func (a *API) listAgents(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	f := store.AgentFilter{}
	if f.ClusterID, err = queryUUID(c, "cluster_id"); err != nil {
		return err
	}
	if f.Status, err = queryEnum(c, "status", models.AgentPending, models.AgentConnected, models.AgentDisconnected, models.AgentRevoked); err != nil {
		return err
	}
	rows, next, err := a.store.ListAgents(c.Request().Context(), f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

type agentDetail struct {
	models.Agent
	ClusterName  string              `json:"cluster_name"`
	RecentEvents []models.AgentEvent `json:"recent_events"`
}

func (a *API) loadAgent(c echo.Context) (models.Agent, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.Agent{}, err
	}
	ag, err := a.store.GetAgent(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return ag, NotFound("agent")
	}
	return ag, err
}

func (a *API) getAgent(c echo.Context) error {
	ag, err := a.loadAgent(c)
	if err != nil {
		return err
	}
	clusterName, err := a.store.ClusterName(c.Request().Context(), ag.ClusterID)
	if err != nil {
		return err
	}
	events, _, err := a.store.ListAgentEvents(c.Request().Context(), ag.ID, store.Page{Limit: 20})
	if err != nil {
		return err
	}
	if events == nil {
		events = []models.AgentEvent{}
	}
	return c.JSON(nethttp.StatusOK, agentDetail{Agent: ag, ClusterName: clusterName, RecentEvents: events})
}

func (a *API) listAgentEvents(c echo.Context) error {
	ag, err := a.loadAgent(c)
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListAgentEvents(c.Request().Context(), ag.ID, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) rotateAgentToken(c echo.Context) error {
	ag, err := a.loadAgent(c)
	if err != nil {
		return err
	}
	after, online, err := a.store.RotateAgentToken(c.Request().Context(), ag.ID, principalOf(c).Email)
	if errors.Is(err, store.ErrConflict) {
		return Conflict("agent_revoked", "a revoked agent has no token to rotate", ag.Status)
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "agent.rotate_token", ResourceType: "agent", ResourceID: ag.ID.String(), ResourceName: ag.Name,
		Summary: map[string]any{"agent_notified": online}})
	return c.JSON(nethttp.StatusOK, map[string]any{"agent": after, "agent_notified": online})
}

func (a *API) revokeAgent(c echo.Context) error {
	ag, err := a.loadAgent(c)
	if err != nil {
		return err
	}
	after, err := a.store.RevokeAgent(c.Request().Context(), ag.ID, principalOf(c).Email)
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "agent.revoke", ResourceType: "agent", ResourceID: ag.ID.String(), ResourceName: ag.Name,
		Summary: map[string]any{"status": map[string]string{"before": ag.Status, "after": after.Status}}})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteAgent(c echo.Context) error {
	ag, err := a.loadAgent(c)
	if err != nil {
		return err
	}
	if _, err := a.store.DeleteAgent(c.Request().Context(), ag.ID); err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "agent.delete", ResourceType: "agent", ResourceID: ag.ID.String(), ResourceName: ag.Name,
		Summary: map[string]any{"cluster_id": ag.ClusterID.String()}})
	return c.NoContent(nethttp.StatusNoContent)
}
