package http

import (
	"context"
	"errors"
	nethttp "net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/store"
)

// AgentVerifier checks agent JWTs (implemented by the agent gateway).
type AgentVerifier interface {
	VerifyAgentToken(ctx context.Context, raw string) (agentID, clusterID uuid.UUID, err error)
}

// authenticateAgent admits /v1/agent requests that carry a valid agent JWT. Every failure is
// the same 401; the reason goes to the log.
func (a *API) authenticateAgent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.hooks.Agents == nil {
			return Unauthorized()
		}
		scheme, raw, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
			return Unauthorized()
		}
		agentID, clusterID, err := a.hooks.Agents.VerifyAgentToken(c.Request().Context(), raw)
		if store.IsUnavailable(err) {
			return err // a 503 with Retry-After: the token may be good, and the agent keeps it
		}
		if err != nil {
			a.log.Info("agent authentication failed", "request_id", requestID(c), "reason", err.Error())
			return Unauthorized()
		}
		SetAgent(c, &AgentIdentity{AgentID: agentID, ClusterID: clusterID})
		return next(c)
	}
}

func (a *API) registerAgentREST(g *echo.Group) {
	g.GET("/me", a.agentMe)
	g.GET("/publishes/:id/revisions/:revision", a.agentSnapshot)
}

type agentMeResponse struct {
	AgentID     uuid.UUID `json:"agent_id"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	ClusterID   uuid.UUID `json:"cluster_id"`
	ClusterName string    `json:"cluster_name"`
}

func (a *API) agentMe(c echo.Context) error {
	id := AgentOf(c)
	ag, err := a.store.GetAgent(c.Request().Context(), id.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("agent")
	}
	if err != nil {
		return err
	}
	name, err := a.store.ClusterName(c.Request().Context(), id.ClusterID)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, agentMeResponse{AgentID: ag.ID, Name: ag.Name, Status: ag.Status, ClusterID: id.ClusterID, ClusterName: name})
}
