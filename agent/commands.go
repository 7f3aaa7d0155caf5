package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// upsertCredential applies a CredentialUpsert and re-renders the credential files.
func (a *Agent) upsertCredential(log *slog.Logger, cmd *agentv1.CredentialUpsert) error {
	c := Credential{
		ID:          cmd.GetCredentialId(),
		Version:     cmd.GetVersion(),
		KeyPrefix:   cmd.GetKeyPrefix(),
		SecretHash:  cmd.GetSecretHash(),
		ClientAppID: cmd.GetClientAppId(),
	}
	switch cmd.GetType() {
	case agentv1.CredentialType_CREDENTIAL_TYPE_API_KEY:
		c.Type = CredentialAPIKey
	case agentv1.CredentialType_CREDENTIAL_TYPE_OAUTH_CLIENT:
		c.Type = CredentialOAuthClient
	default:
		return fmt.Errorf("unsupported credential type %s", cmd.GetType())
	}
	if cmd.GetExpiresAt() != nil {
		t := cmd.GetExpiresAt().AsTime()
		c.ExpiresAt = &t
	}
	for _, g := range cmd.GetGrants() {
		l := g.GetLimits()
		c.Grants = append(c.Grants, Grant{
			PublishID: g.GetPublishId(),
			PlanID:    g.GetPlanId(),
			Limits: PlanLimits{
				RequestsPerSecond: l.GetRequestsPerSecond(),
				RequestsPerMinute: l.GetRequestsPerMinute(),
				RequestsPerHour:   l.GetRequestsPerHour(),
				RequestsPerDay:    l.GetRequestsPerDay(),
				Quota:             l.GetQuota(),
				QuotaPeriod:       l.GetQuotaPeriod(),
			},
		})
	}
	log = log.With("credential_id", c.ID, "version", c.Version)
	if err := a.creds.Upsert(c); err != nil {
		if errors.Is(err, ErrStaleVersion) {
			log.Info("credential upsert ignored: stale version")
		} else {
			log.Warn("credential upsert failed", "err", err)
		}
		return err
	}
	log.Info("credential upserted", "type", c.Type, "grants", len(c.Grants))
	a.renderAllCredentials(log)
	return nil
}

// revokeCredential applies a CredentialRevoke and re-renders the credential files.
func (a *Agent) revokeCredential(log *slog.Logger, cmd *agentv1.CredentialRevoke) error {
	log = log.With("credential_id", cmd.GetCredentialId(), "version", cmd.GetVersion())
	if err := a.creds.Revoke(cmd.GetCredentialId(), cmd.GetVersion(), cmd.GetReason()); err != nil {
		if errors.Is(err, ErrStaleVersion) {
			log.Info("credential revoke ignored: stale version")
		} else {
			log.Warn("credential revoke failed", "err", err)
		}
		return err
	}
	log.Info("credential revoked", "reason", cmd.GetReason())
	a.renderAllCredentials(log)
	return nil
}

// renderAllCredentials rewrites the credential file of every applied publish. It is cheap
// (hashes only) and simpler than tracking which publishes a change touched (a grant can be
// removed as well as added). A failure is logged, not returned: the credential set itself is
// stored, and the Verifier reads that, not the rendered files.
func (a *Agent) renderAllCredentials(log *slog.Logger) {
	if a.nginx != nil {
		// The verifier reads the credential set live; nginx's copy of the maps follows with the
		// next reload.
		a.nginx.credentialsChanged()
		return
	}
	for _, p := range a.st.allApplied() {
		r, err := RendererFor(p.GatewayClass, a.cfg.Render)
		if err == nil {
			err = a.writeCredentials(p.PublishID, r)
		}
		if err != nil {
			log.Error("render credentials", "publish_id", p.PublishID, "err", err)
		}
	}
}

// writeCredentials renders the credentials granted to a publish next to its configuration.
func (a *Agent) writeCredentials(publishID string, r Renderer) error {
	f, err := a.credentialsFile(publishID, r)
	if err != nil {
		return err
	}
	dir := a.st.publishDir(publishID)
	if err := ensureDir(dir, false); err != nil {
		return err
	}
	// Derived from the credential set, which is fsynced: checkRendered rewrites it after a crash.
	f.derived = true
	return writeFilesAtomic(dir, stateFileMode, f)
}

// credentialsFile is the credentials file of a publish, rendered.
func (a *Agent) credentialsFile(publishID string, r Renderer) (fileContent, error) {
	name, data, err := r.RenderCredentials(publishID, a.creds.ForPublish(publishID, time.Now()))
	if err != nil {
		return fileContent{}, fmt.Errorf("render credentials: %w", err)
	}
	return fileContent{name: name, data: data}, nil
}
