// Package syncstate compares what every gateway of a cluster actually serves (the applied state
// its agent reports in heartbeats) with what it should serve (the current deploy command of
// every publish, and the credential rollouts of the cluster), and plans the repairs of the
// drift it finds. It is the one place that decides synced, progressing, failed, drifted and
// stale; the agent gateway, the REST handlers and the gauges only read its answers.
package syncstate

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// The states of an (agent, publish) pair, and of an agent as a whole (its worst pair).
const (
	Synced      = "synced"
	Progressing = "progressing"
	Failed      = "failed"
	Drifted     = "drifted"
	Stale       = "stale"
)

// rank orders states from best to worst; an agent shows its worst.
var rank = map[string]int{Synced: 0, Progressing: 1, Drifted: 2, Failed: 3, Stale: 4}

// Limits are the time limits the computation applies.
type Limits struct {
	// Grace is how long applied may differ from desired after the agent acknowledged the
	// desired revision before it counts as drifted (its heartbeat has to catch up).
	Grace time.Duration
	// StaleAfter is the missed-heartbeat limit: an agent whose last heartbeat is older is
	// stale, never synced.
	StaleAfter time.Duration
	// MaxRepairs is how many repairs of one revision an agent gets; one that still drifts
	// after them is failed, not repaired in a loop. Zero means no limit.
	MaxRepairs int
}

// PublishSync is the state of one publish on one agent.
type PublishSync struct {
	PublishID       string  `json:"publish_id"`
	State           string  `json:"state"`
	DesiredRevision int     `json:"desired_revision"`
	DesiredChecksum string  `json:"desired_checksum"`
	DesiredAction   string  `json:"desired_action"`
	AppliedRevision *int    `json:"applied_revision"`
	AppliedChecksum *string `json:"applied_checksum"`
	// Message says why the state is not synced (the agent's refusal, what differs).
	Message string `json:"message"`
	// Repairs counts the repairs of the desired revision sent to the agent.
	Repairs int `json:"repairs"`
}

// CredentialSync is the state of an agent's credential set.
type CredentialSync struct {
	State           string `json:"state"`
	DesiredChecksum string `json:"desired_checksum"`
	AppliedChecksum string `json:"applied_checksum"`
	Desired         int    `json:"desired_count"`
	Pending         int    `json:"pending_commands"`
}

// AgentSync is the state of one agent: its liveness (Status, LastHeartbeatAt, Live) apart from
// what it serves (Publishes, Credentials) and the worst of both (State).
type AgentSync struct {
	AgentID         uuid.UUID      `json:"agent_id"`
	Name            string         `json:"name"`
	Status          string         `json:"status"`
	Live            bool           `json:"live"`
	LastHeartbeatAt *time.Time     `json:"last_heartbeat_at"`
	State           string         `json:"state"`
	Credentials     CredentialSync `json:"credentials"`
	Publishes       []PublishSync  `json:"publishes"`
	// Ignored lists applied revisions the agent reports that the cluster does not run (a
	// publish of another cluster, a revision that does not exist): ignored, never trusted.
	Ignored []models.AppliedRevision `json:"-"`
}

// Counts are the number of agents in each state.
type Counts struct {
	Synced      int `json:"synced"`
	Progressing int `json:"progressing"`
	Failed      int `json:"failed"`
	Drifted     int `json:"drifted"`
	Stale       int `json:"stale"`
}

func (c *Counts) add(state string) {
	switch state {
	case Synced:
		c.Synced++
	case Progressing:
		c.Progressing++
	case Failed:
		c.Failed++
	case Drifted:
		c.Drifted++
	case Stale:
		c.Stale++
	}
}

// Healthy is false as soon as one agent is drifted, failed or stale.
func (c Counts) Healthy() bool { return c.Drifted == 0 && c.Failed == 0 && c.Stale == 0 }

// ClusterSync is the sync state of every agent and publish of a cluster.
type ClusterSync struct {
	ClusterID   uuid.UUID   `json:"cluster_id"`
	DriftPolicy string      `json:"drift_policy"`
	Healthy     bool        `json:"healthy"`
	Counts      Counts      `json:"counts"`
	ComputedAt  time.Time   `json:"computed_at"`
	Agents      []AgentSync `json:"agents"`
}

// Agent returns the state of one agent of the cluster. It walks the agents: a caller that
// looks up many agents of a big cluster uses ByAgent.
func (c ClusterSync) Agent(id uuid.UUID) (AgentSync, bool) {
	for i := range c.Agents {
		if c.Agents[i].AgentID == id {
			return c.Agents[i], true
		}
	}
	return AgentSync{}, false
}

// ByAgent indexes the cluster's agents by id. The drift check looks up every session of the
// cluster, which with Agent was quadratic in the cluster's agents (10,000 agents: 50 million
// comparisons and as many copies of an AgentSync each check).
func (c ClusterSync) ByAgent() map[uuid.UUID]*AgentSync {
	m := make(map[uuid.UUID]*AgentSync, len(c.Agents))
	for i := range c.Agents {
		m[c.Agents[i].AgentID] = &c.Agents[i]
	}
	return m
}

// index holds the inputs of Compute keyed for lookups.
type index struct {
	desired    map[string]store.DeployIntent                 // publish -> cluster-wide command
	repairs    map[uuid.UUID]map[string][]store.DeployIntent // agent -> publish -> repairs
	deliveries map[[2]uuid.UUID]store.DeployDelivery         // (command, agent)
}

func newIndex(in store.SyncInputs) index {
	ix := index{desired: map[string]store.DeployIntent{}, repairs: map[uuid.UUID]map[string][]store.DeployIntent{},
		deliveries: make(map[[2]uuid.UUID]store.DeployDelivery, len(in.Deliveries))}
	for _, d := range in.Deploys {
		if d.AgentID == nil {
			if cur, ok := ix.desired[d.PublishID]; !ok || d.CreatedAt.After(cur.CreatedAt) {
				ix.desired[d.PublishID] = d
			}
			continue
		}
		m := ix.repairs[*d.AgentID]
		if m == nil {
			m = map[string][]store.DeployIntent{}
			ix.repairs[*d.AgentID] = m
		}
		m[d.PublishID] = append(m[d.PublishID], d)
	}
	for _, d := range in.Deliveries {
		ix.deliveries[[2]uuid.UUID{d.CommandID, d.AgentID}] = d
	}
	return ix
}

// Compute derives the sync state of every agent and publish of a cluster at now.
func Compute(in store.SyncInputs, now time.Time, lim Limits) ClusterSync {
	ix := newIndex(in)
	pubs := make([]string, 0, len(ix.desired))
	for id := range ix.desired {
		pubs = append(pubs, id)
	}
	sort.Strings(pubs)
	credSum := store.CredentialChecksum(in.Credentials)
	out := ClusterSync{ClusterID: in.Cluster.ID, DriftPolicy: in.Cluster.DriftPolicy, ComputedAt: now, Agents: make([]AgentSync, 0, len(in.Agents))}
	for _, a := range in.Agents {
		as := computeAgent(ix, pubs, a, now, lim)
		as.Credentials = credentialState(a, credSum, len(in.Credentials), in.CredentialsPending[a.ID], as.Live)
		if rank[as.Credentials.State] > rank[as.State] {
			as.State = as.Credentials.State
		}
		out.Counts.add(as.State)
		out.Agents = append(out.Agents, as)
	}
	out.Healthy = out.Counts.Healthy()
	return out
}

func computeAgent(ix index, pubs []string, a models.Agent, now time.Time, lim Limits) AgentSync {
	live := a.Status == models.AgentConnected && a.LastHeartbeatAt != nil && now.Sub(*a.LastHeartbeatAt) <= lim.StaleAfter
	as := AgentSync{AgentID: a.ID, Name: a.Name, Status: a.Status, Live: live, LastHeartbeatAt: a.LastHeartbeatAt, State: Synced,
		Publishes: make([]PublishSync, 0, len(pubs))}
	if !live {
		as.State = Stale
	}
	applied := make(map[string]models.AppliedRevision, len(a.Applied.V))
	for _, r := range a.Applied.V {
		d, ok := ix.desired[r.PublishID]
		if !ok || r.Revision < 1 || r.Revision > d.Revision {
			as.Ignored = append(as.Ignored, r) // not a publish of this cluster, or no such revision
			continue
		}
		applied[r.PublishID] = r
	}
	for _, pid := range pubs {
		ps, show := publishState(ix, ix.desired[pid], a.ID, applied, now, lim)
		if !show {
			continue
		}
		if !live {
			ps.State = Stale
		}
		if rank[ps.State] > rank[as.State] {
			as.State = ps.State
		}
		as.Publishes = append(as.Publishes, ps)
	}
	return as
}

// publishState is the state of one publish on one agent; show is false for a withdrawn publish
// the agent no longer has.
func publishState(ix index, d store.DeployIntent, agent uuid.UUID, applied map[string]models.AppliedRevision, now time.Time, lim Limits) (PublishSync, bool) {
	ps := PublishSync{PublishID: d.PublishID, DesiredRevision: d.Revision, DesiredChecksum: d.Checksum, DesiredAction: d.Action}
	r, has := applied[d.PublishID]
	if has {
		rev, sum := r.Revision, r.Checksum
		ps.AppliedRevision, ps.AppliedChecksum = &rev, &sum
	}
	withdraw := d.Action == models.DeployWithdraw
	if withdraw && !has {
		return ps, false
	}
	// The latest attempt at the desired state on this agent: the cluster-wide command, or a
	// repair of the same revision sent after it.
	attempt := d
	for _, rp := range ix.repairs[agent][d.PublishID] {
		if rp.Revision == d.Revision && rp.Action == d.Action && !rp.CreatedAt.Before(attempt.CreatedAt) {
			attempt = rp
		}
	}
	ps.Repairs = attempt.Attempt
	match := !withdraw && has && r.Revision == d.Revision && r.Checksum == d.Checksum && r.Drift == ""
	if match {
		ps.State = Synced
		return ps, true
	}
	del, ok := ix.deliveries[[2]uuid.UUID{attempt.CommandID, agent}]
	switch {
	case !ok || del.Status != models.DeliveryAcked:
		ps.State, ps.Message = Progressing, "command in flight"
	case del.ResultStatus == "failed":
		ps.State, ps.Message = Failed, del.Message
	case del.AckedAt != nil && now.Sub(*del.AckedAt) < lim.Grace:
		ps.State, ps.Message = Progressing, "applied; waiting for the agent's heartbeat"
	case ps.Repairs >= lim.MaxRepairs && lim.MaxRepairs > 0:
		ps.State, ps.Message = Failed, fmt.Sprintf("still drifting after %d repairs: %s", ps.Repairs, driftMessage(d, r, has))
	default:
		ps.State, ps.Message = Drifted, driftMessage(d, r, has)
	}
	return ps, true
}

func driftMessage(d store.DeployIntent, r models.AppliedRevision, has bool) string {
	switch {
	case d.Action == models.DeployWithdraw:
		return fmt.Sprintf("withdrawn, but the gateway still serves revision %d", r.Revision)
	case !has:
		return fmt.Sprintf("revision %d is missing from the gateway", d.Revision)
	case r.Drift != "":
		return "the gateway does not serve revision " + strconv.Itoa(r.Revision) + " as rendered: " + r.Drift
	case r.Revision != d.Revision:
		return fmt.Sprintf("the gateway serves revision %d, revision %d is desired", r.Revision, d.Revision)
	default:
		return "the gateway serves revision " + strconv.Itoa(r.Revision) + " with another checksum"
	}
}

func credentialState(a models.Agent, desired string, n, pending int, live bool) CredentialSync {
	cs := CredentialSync{DesiredChecksum: desired, AppliedChecksum: a.CredentialChecksum, Desired: n, Pending: pending}
	switch {
	case !live:
		cs.State = Stale
	case a.CredentialChecksum == "" || a.CredentialChecksum == desired:
		// An agent that does not report a checksum (before v0.3) is judged by its acks alone.
		cs.State = Synced
		if pending > 0 {
			cs.State = Progressing
		}
	case pending > 0:
		cs.State = Progressing
	default:
		cs.State = Drifted
	}
	return cs
}
