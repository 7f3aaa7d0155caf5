package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// appliedState is what the gateway has loaded, per publish, for ConnectRequest and Heartbeat:
// the applied revisions of the state directory, each with the reason the gateway does not
// serve it as rendered (nginx not running, a rendered file changed on disk), if any.
func (a *Agent) appliedState() []*agentv1.AppliedRevision {
	out := a.st.appliedRevisions()
	if a.nginx == nil || a.nginx.srv == nil {
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

// appliedDigest is Heartbeat.applied_digest: SHA-256 over "<publish_id> <revision> <checksum>
// <drift>\n" sorted by publish_id.
func appliedDigest(rs []*agentv1.AppliedRevision) string {
	sorted := append([]*agentv1.AppliedRevision(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].PublishId < sorted[j].PublishId })
	h := sha256.New()
	var buf []byte
	for _, r := range sorted {
		buf = append(buf[:0], r.PublishId...)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, int64(r.Revision), 10)
		buf = append(buf, ' ')
		buf = append(buf, r.Checksum...)
		buf = append(buf, ' ')
		buf = append(buf, r.Drift...)
		buf = append(buf, '\n')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Checksum is Heartbeat.credential_checksum of the store: SHA-256 over "<id> <version>\n" of
// every credential that is not revoked, sorted by id.
func (s *CredentialStore) Checksum() string {
	s.mu.RLock()
	ids := make([]string, 0, len(s.creds))
	vers := make(map[string]int64, len(s.creds))
	for id, c := range s.creds {
		if !c.Revoked {
			ids = append(ids, id)
			vers[id] = c.Version
		}
	}
	s.mu.RUnlock()
	sort.Strings(ids)
	h := sha256.New()
	var buf []byte
	for _, id := range ids {
		buf = append(buf[:0], id...)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, vers[id], 10)
		buf = append(buf, '\n')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}
