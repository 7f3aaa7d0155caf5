package agent

import (
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// maxUsagePerHeartbeat bounds the credential usage entries of one Heartbeat (about 60 bytes
// each, so a heartbeat stays well below a server's smallest sensible message limit). What does
// not fit stays for the next heartbeat.
const maxUsagePerHeartbeat = 500

// usageLog collects, per credential, the last successful verification and how many requests
// were allowed since the usage was last reported. Verifiers made by Agent.Verifier write to the
// agent's log; heartbeats take what changed and report it. It lives in memory only: uses not
// yet reported when the process stops are lost, which only makes a last-used time older.
type usageLog struct {
	mu      sync.Mutex
	pending map[string]*credentialUse
}

type credentialUse struct {
	last     time.Time
	requests int64
}

func newUsageLog() *usageLog { return &usageLog{pending: map[string]*credentialUse{}} }

// record notes one allowed request of a credential at t.
func (l *usageLog) record(credentialID string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.pending[credentialID]
	if u == nil {
		u = &credentialUse{}
		l.pending[credentialID] = u
	}
	if t.After(u.last) {
		u.last = t
	}
	u.requests++
}

// take removes and returns up to n entries, the least recently used first (so a backlog larger
// than one heartbeat cannot starve any credential).
func (l *usageLog) take(n int) []*agentv1.CredentialUsage {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return nil
	}
	ids := make([]string, 0, len(l.pending))
	for id := range l.pending {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := l.pending[ids[i]], l.pending[ids[j]]
		if !a.last.Equal(b.last) {
			return a.last.Before(b.last)
		}
		return ids[i] < ids[j]
	})
	if len(ids) > n {
		ids = ids[:n]
	}
	out := make([]*agentv1.CredentialUsage, 0, len(ids))
	for _, id := range ids {
		u := l.pending[id]
		out = append(out, &agentv1.CredentialUsage{CredentialId: id, LastUsedAt: timestamppb.New(u.last), Requests: u.requests})
		delete(l.pending, id)
	}
	return out
}

// restore puts back entries that take returned but that could not be sent, merged with what
// was recorded meanwhile.
func (l *usageLog) restore(us []*agentv1.CredentialUsage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range us {
		u := l.pending[r.GetCredentialId()]
		if u == nil {
			u = &credentialUse{}
			l.pending[r.GetCredentialId()] = u
		}
		if t := r.GetLastUsedAt().AsTime(); t.After(u.last) {
			u.last = t
		}
		u.requests += r.GetRequests()
	}
}
