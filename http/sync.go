package http

import (
	"context"
	"errors"
	nethttp "net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/syncstate"
)

// clusterSync computes the sync state of one cluster now (package syncstate decides it).
func (a *API) clusterSync(ctx context.Context, clusterID uuid.UUID) (syncstate.ClusterSync, error) {
	in, err := a.store.ClusterSyncInputs(ctx, clusterID)
	if errors.Is(err, store.ErrNotFound) {
		return syncstate.ClusterSync{}, NotFound("cluster")
	}
	if err != nil {
		return syncstate.ClusterSync{}, err
	}
	return syncstate.Compute(in, time.Now().UTC(), a.settings.SyncLimits), nil
}

// getClusterSync answers GET /v1/operator/clusters/{id}/sync: every agent of the cluster with
// every publish the cluster runs, desired vs applied.
func (a *API) getClusterSync(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	cs, err := a.clusterSync(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, cs)
}

// syncSummary is what a cluster in a list or detail says about its agents' sync state.
type syncSummary struct {
	Healthy bool             `json:"healthy"`
	Counts  syncstate.Counts `json:"counts"`
}

// clusterWithSync is a cluster with its sync summary (lists) or its whole sync state (detail).
type clusterWithSync struct {
	store.ClusterView
	Sync       syncSummary           `json:"sync"`
	SyncDetail []syncstate.AgentSync `json:"sync_agents,omitempty"`
}

func (a *API) withSync(ctx context.Context, cl store.ClusterView, detail bool) (clusterWithSync, error) {
	cs, err := a.clusterSync(ctx, cl.ID)
	if err != nil {
		return clusterWithSync{}, err
	}
	out := clusterWithSync{ClusterView: cl, Sync: syncSummary{Healthy: cs.Healthy, Counts: cs.Counts}}
	if detail {
		out.SyncDetail = cs.Agents
	}
	return out, nil
}

// agentPublishSync is one agent's state of one publish, on the publish detail.
type agentPublishSync struct {
	AgentID         uuid.UUID  `json:"agent_id"`
	AgentName       string     `json:"agent_name"`
	Status          string     `json:"status"`
	Live            bool       `json:"live"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
	syncstate.PublishSync
}

// publishSync lists the state of a publish on every agent of its cluster.
func (a *API) publishSync(ctx context.Context, clusterID uuid.UUID, publishID string) ([]agentPublishSync, error) {
	out := []agentPublishSync{}
	in, err := a.store.ClusterSyncInputs(ctx, clusterID)
	if errors.Is(err, store.ErrNotFound) {
		return out, nil // a draft without a cluster
	}
	if err != nil {
		return out, err
	}
	cs := syncstate.Compute(in, time.Now().UTC(), a.settings.SyncLimits)
	for _, ag := range cs.Agents {
		for _, ps := range ag.Publishes {
			if ps.PublishID == publishID {
				out = append(out, agentPublishSync{AgentID: ag.AgentID, AgentName: ag.Name, Status: ag.Status, Live: ag.Live,
					LastHeartbeatAt: ag.LastHeartbeatAt, PublishSync: ps})
			}
		}
	}
	return out, nil
}
