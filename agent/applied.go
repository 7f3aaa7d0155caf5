package agent

import (
	"github.com/imprun/imprun-server/digest"
	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// appliedState is what the gateway has loaded, per publish, for ConnectRequest and Heartbeat:
// the applied revisions of the state directory, each with the reason the gateway does not
// serve it as rendered (nginx not running, a rendered file changed on disk), if any.
func (a *Agent) appliedState() []*agentv1.AppliedRevision {
	out := a.st.appliedRevisions()
	if a.nginx == nil {
		a.drift.annotate(out)
		return out
	}
	if a.nginx.srv == nil {
		return out
	}
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.PublishId
	}
	drift := a.nginx.srv.Drift(ids)
	for _, r := range out {
		r.Drift = drift[r.PublishId]
	}
	return out
}

// appliedDigest is Heartbeat.applied_digest (package digest defines it for both sides).
func appliedDigest(rs []*agentv1.AppliedRevision) string {
	as := make([]digest.Applied, len(rs))
	for i, r := range rs {
		as[i] = digest.Applied{PublishID: r.GetPublishId(), Revision: int64(r.GetRevision()), Checksum: r.GetChecksum(), Drift: r.GetDrift()}
	}
	return digest.AppliedSet(as)
}

// Checksum is Heartbeat.credential_checksum of the store: package digest's CredentialSet of
// every credential that is not revoked.
func (s *CredentialStore) Checksum() string {
	s.mu.RLock()
	vers := make(map[string]int64, len(s.creds))
	for id, c := range s.creds {
		if !c.Revoked {
			vers[id] = c.Version
		}
	}
	s.mu.RUnlock()
	return digest.CredentialSet(vers)
}
