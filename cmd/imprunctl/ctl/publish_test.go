package ctl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/client"
)

func TestWaitLine(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := func(v string) *string { return &v }
	type agent = struct {
		AgentId         *string    `json:"agent_id,omitempty"`
		LastHeartbeatAt *time.Time `json:"last_heartbeat_at,omitempty"`
		Name            *string    `json:"name,omitempty"`
		OfflineSince    *time.Time `json:"offline_since,omitempty"`
		Status          *string    `json:"status,omitempty"`
	}
	detail := func(phase client.WaitStatePhase, agents ...agent) *client.ProductPublishDetail {
		d := &client.ProductPublishDetail{Status: "DEPLOYING", CurrentRevision: 2, WaitState: &client.WaitState{Phase: &phase}}
		d.WaitState.Presence = &struct {
			Agents *[]struct {
				AgentId         *string    `json:"agent_id,omitempty"`
				LastHeartbeatAt *time.Time `json:"last_heartbeat_at,omitempty"`
				Name            *string    `json:"name,omitempty"`
				OfflineSince    *time.Time `json:"offline_since,omitempty"`
				Status          *string    `json:"status,omitempty"`
			} `json:"agents,omitempty"`
			CheckedAt   *time.Time `json:"checked_at,omitempty"`
			ClusterId   *string    `json:"cluster_id,omitempty"`
			ClusterName *string    `json:"cluster_name,omitempty"`
		}{Agents: &agents, ClusterName: s("kr-prod-1")}
		return d
	}
	for _, tc := range []struct {
		d    *client.ProductPublishDetail
		want string
	}{
		{&client.ProductPublishDetail{Status: "DEPLOYING", CurrentRevision: 1}, "DEPLOYING revision 1"},
		{detail(client.WaitingForResult), "DEPLOYING revision 2 (waiting_for_result): waiting for an agent of cluster kr-prod-1 (none registered)"},
		{detail(client.WaitingForResult, agent{Name: s("a1"), Status: s("disconnected"), OfflineSince: &since}, agent{Name: s("a2"), Status: s("pending")}),
			"DEPLOYING revision 2 (waiting_for_result): waiting for an agent of cluster kr-prod-1; offline: a1 offline since 2026-01-02T03:04:05Z, a2 pending"},
		{detail(client.WaitingForResult, agent{Name: s("a1"), Status: s("connected")}, agent{Name: s("a2"), Status: s("disconnected"), OfflineSince: &since}),
			"DEPLOYING revision 2 (waiting_for_result): 1 agent(s) of cluster kr-prod-1 online; offline: a2 offline since 2026-01-02T03:04:05Z"},
		{detail(client.Finishing, agent{Name: s("a1"), Status: s("disconnected")}), "DEPLOYING revision 2 (finishing)"},
	} {
		require.Equal(t, tc.want, waitLine(tc.d))
	}
}
