// Package digest defines the two checksums of the agent protocol that both sides compute: the
// digest of an agent's applied set (Heartbeat.applied_digest) and the checksum of its
// credential set (Heartbeat.credential_checksum, ConnectRequest.credential_checksum). It
// imports only the standard library, so the agent and the server use one definition and can
// never compute them differently.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
)

// Applied is one publish as a gateway serves it.
type Applied struct {
	PublishID string
	Revision  int64
	Checksum  string
	Drift     string // why the gateway does not serve the revision as rendered; "" when it does
}

// AppliedSet is SHA-256 over "<publish_id> <revision> <checksum> <drift>\n", sorted by
// publish_id, in hex.
func AppliedSet(rs []Applied) string {
	sorted := append([]Applied(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].PublishID < sorted[j].PublishID })
	h := sha256.New()
	var buf []byte
	for _, r := range sorted {
		buf = append(buf[:0], r.PublishID...)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, r.Revision, 10)
		buf = append(buf, ' ')
		buf = append(buf, r.Checksum...)
		buf = append(buf, ' ')
		buf = append(buf, r.Drift...)
		buf = append(buf, '\n')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CredentialSet is SHA-256 over "<credential_id> <version>\n", sorted by id, in hex.
func CredentialSet(versions map[string]int64) string {
	ids := make([]string, 0, len(versions))
	for id := range versions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	h := sha256.New()
	var buf []byte
	for _, id := range ids {
		buf = append(buf[:0], id...)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, versions[id], 10)
		buf = append(buf, '\n')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}
