package agentgw

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// SnapshotPath is the REST path of a publish revision snapshot.
func SnapshotPath(publishID string, revision int) string {
	return fmt.Sprintf("/v1/agent/publishes/%s/revisions/%d", publishID, revision)
}

// toMessage renders an outbox command as the message the agent receives.
func (g *Gateway) toMessage(c models.AgentCommand) (*agentv1.ServerMessage, error) {
	switch c.Kind {
	case models.CommandDeploy:
		p, err := models.DeployPayloadOf(c.Payload)
		if err != nil {
			return nil, err
		}
		action := agentv1.DeployAction_DEPLOY_ACTION_APPLY
		if p.Action == models.DeployWithdraw {
			action = agentv1.DeployAction_DEPLOY_ACTION_WITHDRAW
		}
		return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_DeployCommand{DeployCommand: &agentv1.DeployCommand{
			CommandId: c.ID.String(), PublishId: p.PublishID, Revision: int32(p.Revision), Checksum: p.Checksum,
			Action: action, SnapshotPath: SnapshotPath(p.PublishID, p.Revision), TraceContext: c.TraceContext,
		}}}, nil
	case models.CommandCredentialUpsert:
		var p models.CredentialUpsertPayload
		if err := models.FromJSONMap(c.Payload, &p); err != nil {
			return nil, err
		}
		typ := agentv1.CredentialType_CREDENTIAL_TYPE_API_KEY
		if p.Type == "oauth_client" {
			typ = agentv1.CredentialType_CREDENTIAL_TYPE_OAUTH_CLIENT
		}
		up := &agentv1.CredentialUpsert{CommandId: c.ID.String(), CredentialId: p.CredentialID, Version: p.Version, Type: typ,
			KeyPrefix: p.KeyPrefix, SecretHash: p.SecretHash, ClientAppId: p.ClientAppID, TraceContext: c.TraceContext}
		for _, gr := range p.Grants {
			up.Grants = append(up.Grants, &agentv1.CredentialGrant{PublishId: gr.PublishID, PlanId: gr.PlanID, Limits: &agentv1.PlanLimits{
				RequestsPerSecond: gr.Limits.RequestsPerSecond, RequestsPerMinute: gr.Limits.RequestsPerMinute,
				RequestsPerHour: gr.Limits.RequestsPerHour, RequestsPerDay: gr.Limits.RequestsPerDay, Quota: gr.Limits.Quota,
				QuotaPeriod: gr.Limits.QuotaPeriod,
			}})
		}
		if p.ExpiresAt != nil {
			up.ExpiresAt = timestamppb.New(*p.ExpiresAt)
		}
		return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_CredentialUpsert{CredentialUpsert: up}}, nil
	case models.CommandCredentialRevoke:
		var p models.CredentialRevokePayload
		if err := models.FromJSONMap(c.Payload, &p); err != nil {
			return nil, err
		}
		return &agentv1.ServerMessage{Payload: &agentv1.ServerMessage_CredentialRevoke{CredentialRevoke: &agentv1.CredentialRevoke{
			CommandId: c.ID.String(), CredentialId: p.CredentialID, Version: p.Version, Reason: p.Reason, TraceContext: c.TraceContext,
		}}}, nil
	}
	return nil, fmt.Errorf("unknown command kind %q", c.Kind)
}
