package store

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/digest"
	"github.com/imprun/imprun-server/models"
)

// SyncInputs is what the control plane knows about one cluster to tell, per agent and publish,
// whether the gateway serves what it should (package syncstate computes it).
type SyncInputs struct {
	Cluster models.Cluster
	// Agents are the cluster's agents that are not revoked.
	Agents []models.Agent
	// Deploys are the deploy commands that say what the cluster should run: the current
	// command of every publish (cluster-wide) and the current repair of each agent and publish.
	Deploys []DeployIntent
	// Deliveries are the deliveries of Deploys, per agent.
	Deliveries []DeployDelivery
	// Credentials are the credential versions the cluster's agents must hold (upserted, not
	// revoked), and CredentialsPending, per agent, how many credential commands it has not
	// acknowledged yet. An agent that reports the desired set (CredentialChecksum) has nothing
	// pending, whatever it has acknowledged: its gateway holds what it should, and counting
	// its commands cost every drift check agents x credentials lookups (a command stays current
	// for as long as its credential does). Agents that report another set, or none, are counted.
	Credentials        []CredentialVersion
	CredentialsPending map[uuid.UUID]int
}

// CredentialChecksum is the checksum of a credential set as the protocol defines it
// (Heartbeat.credential_checksum; package digest defines it for both sides).
func CredentialChecksum(creds []CredentialVersion) string {
	vers := make(map[string]int64, len(creds))
	for _, c := range creds {
		vers[c.CredentialID.String()] = c.Version
	}
	return digest.CredentialSet(vers)
}

// DeployIntent is one deploy command as the sync computation reads it.
type DeployIntent struct {
	CommandID uuid.UUID
	AgentID   *uuid.UUID // nil: the cluster-wide command; set: a repair for one agent
	PublishID string
	Revision  int
	Checksum  string
	Action    string
	CreatedAt time.Time
	// Attempt numbers the repairs of one revision on one agent (0 for the cluster command).
	Attempt int
}

// DeployDelivery is the delivery of a deploy command to one agent.
type DeployDelivery struct {
	CommandID    uuid.UUID
	AgentID      uuid.UUID
	Status       string
	AckedAt      *time.Time
	ResultStatus string
	Message      string
}

// CredentialVersion is one credential at the version a cluster's agents must hold.
type CredentialVersion struct {
	CredentialID uuid.UUID
	Version      int64
}

// ClusterSyncInputs loads the sync inputs of a cluster in a handful of statements, whatever
// the number of agents and publishes.
func (s *Store) ClusterSyncInputs(ctx context.Context, clusterID uuid.UUID) (SyncInputs, error) {
	return s.syncInputs(ctx, clusterID, nil)
}

// AgentSyncInputs loads the sync inputs of one agent: the cluster's desired state, and of its
// agents only that one (its row, its repairs, its deliveries, its pending credential
// commands). An agent's sync state depends on nothing else, and its connect then costs the
// same in a cluster of three agents or of 100,000 (loading the whole cluster on every connect
// made a fleet's reconnect quadratic).
func (s *Store) AgentSyncInputs(ctx context.Context, clusterID, agentID uuid.UUID) (SyncInputs, error) {
	return s.syncInputs(ctx, clusterID, &agentID)
}

// HeldSyncInputs loads the sync inputs of the cluster's agents that replica holds (their rows
// name it), and, when unheld is set, also of those no live replica holds: their replica_id is
// unset, or names a replica whose lease is gone or older than liveSince. Each replica's drift
// check reads its own share of a cluster this way instead of the whole cluster (with four
// replicas every pass read each agent four times), and one replica (OldestLiveReplica) reads
// the agents nobody holds, so that every agent is counted by exactly one replica.
func (s *Store) HeldSyncInputs(ctx context.Context, clusterID, replica uuid.UUID, unheld bool, liveSince time.Time) (SyncInputs, error) {
	if unheld {
		return s.syncInputsOf(ctx, &heldOrUnheldSyncQueries, []any{clusterID, replica, liveSince}, nil, nil)
	}
	return s.syncInputsOf(ctx, &heldSyncQueries, []any{clusterID, replica}, nil, nil)
}

// OldestLiveReplica is the replica whose lease is live (alive since liveSince) and started
// first (ties by id): the one that reports the agents no replica holds. ok is false when no
// lease is live.
func (s *Store) OldestLiveReplica(ctx context.Context, liveSince time.Time) (id uuid.UUID, ok bool, err error) {
	err = s.readRows(ctx, `SELECT replica_id FROM gateway_leases WHERE alive_at >= $1 ORDER BY started_at, replica_id LIMIT 1`,
		[]any{liveSince}, func(rs rowScanner) error {
			ok = true
			return rs.Scan(&id)
		})
	return id, ok, err
}

// ClustersWithUnheldAgents lists the clusters with agents (not revoked) that no live replica
// holds, as HeldSyncInputs judges them.
func (s *Store) ClustersWithUnheldAgents(ctx context.Context, liveSince time.Time) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	err := s.readRows(ctx, `SELECT DISTINCT a.cluster_id FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id
		WHERE a.status <> 'revoked' AND `+unheldAgent("$1"), []any{liveSince}, func(rs rowScanner) error {
		var id uuid.UUID
		if err := rs.Scan(&id); err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	})
	return ids, err
}

// unheldAgent is true of an agent row a (joined with its replica's lease as l) that no live
// replica holds: alive since liveSince, a parameter.
func unheldAgent(liveSince string) string {
	return `(a.replica_id IS NULL OR l.alive_at IS NULL OR l.alive_at < ` + liveSince + `)`
}

// ConnectInputs is what a connecting agent's stream reads: AgentSyncInputs and
// PendingCommands in the same round trip (each statement with its own snapshot, as when they
// were two). A connect that enqueues a repair reads its pending commands again.
func (s *Store) ConnectInputs(ctx context.Context, clusterID, agentID uuid.UUID) (SyncInputs, []models.AgentCommand, error) {
	var pending []models.AgentCommand
	in, err := s.syncInputs(ctx, clusterID, &agentID, pendingCommandsRead(clusterID, agentID, &pending))
	return in, pending, err
}

// syncInputs loads the inputs of the cluster's agents, or of the one agent when agentID is set,
// in one round trip (readBatch): an agent's connect reads its own, so a fleet's reconnect storm
// is as many batches as agents, and each went through GORM as six statements before.
//
// Of the cluster, Cluster holds the id, name, status and drift policy; of each agent, Agents
// hold the id, cluster, name, status, applied set, credential checksum and the heartbeat as
// shown (agentSeen): what package syncstate reads. The reads of more go in the same batch,
// after these.
func (s *Store) syncInputs(ctx context.Context, clusterID uuid.UUID, agentID *uuid.UUID, more ...batchRead) (SyncInputs, error) {
	if agentID != nil {
		return s.syncInputsOf(ctx, &agentSyncQueries, []any{clusterID, *agentID}, agentID, nil, more...)
	}
	return s.syncInputsOf(ctx, &clusterSyncQueries, []any{clusterID}, nil, nil, more...)
}

// syncInputsOf runs the statements q (one of syncQueries') with args, the cluster first, and
// then counts the credentials pending (see SyncInputs). Of one agent (one), the count goes in
// the batch, whatever the agent reports: it costs as many lookups as the cluster has
// credentials, and a connect stays one round trip.
//
// The statements of before go first in the batch (a connect's claim), those of more after.
func (s *Store) syncInputsOf(ctx context.Context, q *[5]string, args []any, one *uuid.UUID, before []batchRead, more ...batchRead) (SyncInputs, error) {
	r := newSyncRead(q, args, one != nil)
	err := s.readBatch(ctx, append(append(before[:len(before):len(before)], r.reads...), more...)...)
	if err != nil {
		return r.in, err
	}
	count, err := r.done()
	if err != nil || len(count) == 0 {
		return r.in, err
	}
	return r.in, s.readRows(ctx, credentialsPendingQuery(len(count), len(r.in.Agents)), []any{args[0], count}, r.pending)
}

// syncRead is the reads of syncInputsOf's batch and, once the batch has run, what they found.
type syncRead struct {
	in    SyncInputs
	reads []batchRead
	found bool // the cluster's row
	one   bool // of one agent
}

func newSyncRead(q *[5]string, args []any, one bool) *syncRead {
	r := &syncRead{in: SyncInputs{CredentialsPending: map[uuid.UUID]int{}}, one: one}
	in := &r.in
	r.reads = []batchRead{
		{q[0], args[:1], func(rs rowScanner) error {
			r.found = true
			c := &in.Cluster
			return rs.Scan(&c.ID, &c.Name, &c.Status, &c.DriftPolicy)
		}},
		{q[1], args, func(rs rowScanner) error {
			var a models.Agent
			var total int
			if err := rs.Scan(&a.ID, &a.ClusterID, &a.Name, &a.Status, &a.Applied, &a.CredentialChecksum, &a.LastHeartbeatAt, &total); err != nil {
				return err
			}
			if in.Agents == nil {
				// Sized once: a cluster of 10,000 agents grew its slice a dozen times, 2.6 MB
				// at the end, in every drift check.
				in.Agents = make([]models.Agent, 0, total)
			}
			in.Agents = append(in.Agents, a)
			return nil
		}},
		{q[2], args, func(rs rowScanner) error {
			var d DeployIntent
			var publish *string
			if err := rs.Scan(&d.CommandID, &d.AgentID, &publish, &d.Revision, &d.Checksum, &d.Action, &d.CreatedAt, &d.Attempt); err != nil {
				return err
			}
			if publish != nil {
				d.PublishID = *publish
			}
			in.Deploys = append(in.Deploys, d)
			return nil
		}},
		{q[3], args, func(rs rowScanner) error {
			var d DeployDelivery
			if err := rs.Scan(&d.CommandID, &d.AgentID, &d.Status, &d.AckedAt, &d.ResultStatus, &d.Message); err != nil {
				return err
			}
			in.Deliveries = append(in.Deliveries, d)
			return nil
		}},
		{q[4], args[:1], func(rs rowScanner) error {
			var c CredentialVersion
			if err := rs.Scan(&c.CredentialID, &c.Version); err != nil {
				return err
			}
			in.Credentials = append(in.Credentials, c)
			return nil
		}},
	}
	if one {
		r.reads = append(r.reads, batchRead{credentialsPendingOfAgent, args[:2], r.pending})
	}
	return r
}

// pending reads a row (agent, count) of the credentials pending.
func (r *syncRead) pending(rs rowScanner) error {
	var id uuid.UUID
	var n int
	if err := rs.Scan(&id, &n); err != nil {
		return err
	}
	r.in.CredentialsPending[id] = n
	return nil
}

// done completes the inputs once the batch has run: ErrNotFound without the cluster's row, and
// the agents whose credentials pending are still to be counted, in a statement of their own
// (none of one agent, counted in the batch).
func (r *syncRead) done() (count []uuid.UUID, err error) {
	if !r.found {
		return nil, ErrNotFound
	}
	// Only the agents that do not report the desired credential set are counted, in a
	// statement of their own (it needs the set): in a cluster at rest, none.
	desired := CredentialChecksum(r.in.Credentials)
	for _, a := range r.in.Agents {
		if a.CredentialChecksum == desired {
			delete(r.in.CredentialsPending, a.ID)
		} else if !r.one {
			count = append(count, a.ID)
		}
	}
	return count, nil
}

// credentialsPendingQuery is the statement that counts, per agent of the cluster ($1) among
// $2 (n of the "of" agents read), the current credential commands (cluster-wide or its own) it
// has not acknowledged. A few agents (an agent's connect, a cluster with a few agents behind)
// look each (agent, command) pair up in the deliveries' key. Most of the agents read (those of
// a cluster before v0.3, or all of them during a rollout) are counted from the cluster's
// acknowledgements at once: that reads every acknowledgement of its current credential
// commands, but in order instead of one random probe a pair (1,000 agents x 100 credentials:
// 108 ms instead of 588 ms, BenchmarkClusterSyncInputs), so it pays only when the agents to
// count are many and most of the agents there are.
func credentialsPendingQuery(n, of int) string {
	if n <= credentialsPendingProbed || 2*n <= of {
		return credentialsPendingByPair
	}
	return credentialsPendingByCount
}

// credentialsPendingProbed is the most agents whose pending credentials are always looked up
// pair by pair.
const credentialsPendingProbed = 32

const (
	credentialsPendingByPair = `SELECT a.id, count(*) FROM agents a
	JOIN agent_commands c ON c.cluster_id = a.cluster_id AND (c.agent_id IS NULL OR c.agent_id = a.id)
	WHERE a.cluster_id = $1 AND a.id = ANY($2) AND a.status <> 'revoked' AND c.superseded_at IS NULL AND c.kind IN ('credential_upsert', 'credential_revoke')
	  AND NOT EXISTS (SELECT 1 FROM agent_command_deliveries d WHERE d.command_id = c.id AND d.agent_id = a.id AND d.status = 'acked')
	GROUP BY a.id`
	// credentialsPendingOfAgent is credentialsPendingByPair of one agent ($2), every connect's:
	// with a.id = $2 instead of an array, Postgres keeps the prepared statement's generic plan
	// (with ANY($2) a custom plan was cheaper to its estimates, so it planned the statement
	// again at each connect: 0.37 ms of 0.40).
	credentialsPendingOfAgent = `SELECT a.id, count(*) FROM agents a
	JOIN agent_commands c ON c.cluster_id = a.cluster_id AND (c.agent_id IS NULL OR c.agent_id = a.id)
	WHERE a.cluster_id = $1 AND a.id = $2 AND a.status <> 'revoked' AND c.superseded_at IS NULL AND c.kind IN ('credential_upsert', 'credential_revoke')
	  AND NOT EXISTS (SELECT 1 FROM agent_command_deliveries d WHERE d.command_id = c.id AND d.agent_id = a.id AND d.status = 'acked')
	GROUP BY a.id`
	// The commands an agent should have (the cluster-wide ones and its own) less the ones it
	// acknowledged.
	credentialsPendingByCount = `WITH c AS MATERIALIZED (
		SELECT c.id, c.agent_id FROM agent_commands c
		WHERE c.cluster_id = $1 AND c.superseded_at IS NULL AND c.kind IN ('credential_upsert', 'credential_revoke')
	), acked AS MATERIALIZED (
		SELECT d.agent_id, count(*) AS n FROM c JOIN agent_command_deliveries d ON d.command_id = c.id
		WHERE d.status = 'acked' AND (c.agent_id IS NULL OR c.agent_id = d.agent_id)
		GROUP BY d.agent_id
	)
	SELECT a.id, w.n + coalesce(o.n, 0) - coalesce(k.n, 0) FROM agents a
	CROSS JOIN (SELECT count(*) AS n FROM c WHERE c.agent_id IS NULL) w
	LEFT JOIN (SELECT c.agent_id, count(*) AS n FROM c WHERE c.agent_id IS NOT NULL GROUP BY 1) o ON o.agent_id = a.id
	LEFT JOIN acked k ON k.agent_id = a.id
	WHERE a.cluster_id = $1 AND a.id = ANY($2) AND a.status <> 'revoked' AND w.n + coalesce(o.n, 0) > coalesce(k.n, 0)`
)

// The statements of syncInputsOf, of a whole cluster ($1), of one agent of it ($1, $2), of the
// agents a replica holds ($1, the replica $2) and of those and the unheld ones ($1, $2,
// liveSince $3; see HeldSyncInputs), built once: every connect runs the agent's. The two
// scopes of a replica are separate statements so that the planner reads a replica's own
// agents by agents_replica_idx.
var (
	clusterSyncQueries      = syncQueries(wholeCluster)
	agentSyncQueries        = syncQueries(oneAgent)
	heldSyncQueries         = syncQueries(heldAgents)
	heldOrUnheldSyncQueries = syncQueries(heldOrUnheldAgents)
)

// syncScope is which agents of the cluster syncQueries read.
type syncScope int

const (
	wholeCluster syncScope = iota
	oneAgent
	heldAgents
	heldOrUnheldAgents
)

func syncQueries(scope syncScope) [5]string {
	// only narrows a statement to the agents of the scope, by the column that holds the agent.
	only := func(col string) string {
		switch scope {
		case oneAgent:
			return " AND " + col + " = $2"
		case heldAgents:
			return " AND " + col + " IN (SELECT a.id FROM agents a WHERE a.replica_id = $2 AND a.cluster_id = $1)"
		case heldOrUnheldAgents:
			return " AND " + col + ` IN (SELECT a.id FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id
				WHERE a.cluster_id = $1 AND (a.replica_id = $2 OR ` + unheldAgent("$3") + `))`
		}
		return ""
	}
	return [5]string{
		`SELECT id, name, status, drift_policy FROM clusters WHERE id = $1`,
		`SELECT a.id, a.cluster_id, a.name, a.status, a.applied, a.credential_checksum, ` + agentSeen + `, count(*) OVER ()
			FROM agents a LEFT JOIN gateway_leases l ON l.replica_id = a.replica_id
			WHERE a.cluster_id = $1 AND a.status <> 'revoked'` + only("a.id") + ` ORDER BY a.name`,
		`SELECT c.id, c.agent_id, c.payload->>'publish_id', coalesce((c.payload->>'revision')::int, 0),
				coalesce(c.payload->>'checksum', ''), coalesce(c.payload->>'action', ''), c.created_at,
				coalesce((c.payload->>'attempt')::int, 0)
			FROM agent_commands c
			WHERE c.cluster_id = $1 AND c.kind = 'deploy' AND c.superseded_at IS NULL
			  AND ((c.agent_id IS NULL AND c.supersede_key LIKE 'publish/%') OR (c.agent_id IS NOT NULL AND c.supersede_key LIKE 'repair/%'` + only("c.agent_id") + `))`,
		`SELECT d.command_id, d.agent_id, d.status, d.acked_at, d.result_status, coalesce(d.result->>'message', '')
			FROM agent_commands c JOIN agent_command_deliveries d ON d.command_id = c.id
			WHERE c.cluster_id = $1 AND c.kind = 'deploy' AND c.superseded_at IS NULL` + only("d.agent_id"),
		`SELECT credential_id, version FROM credential_rollouts WHERE cluster_id = $1 AND action = 'upsert' ORDER BY credential_id`,
	}
}

// ClusterCredentialCommands returns the command that carried the current rollout of every
// credential of a cluster (upserts and revocations), so that a repair can send an agent the
// whole credential set again.
func (s *Store) ClusterCredentialCommands(ctx context.Context, clusterID uuid.UUID) ([]models.AgentCommand, error) {
	var rows []models.AgentCommand
	err := s.db(ctx).Raw(`SELECT c.* FROM credential_rollouts r JOIN agent_commands c ON c.id = r.command_id
		WHERE r.cluster_id = ? ORDER BY c.priority, c.created_at, c.id`, clusterID).Scan(&rows).Error
	return rows, err
}

// ClusterIDs lists every cluster id (for the sync gauges).
func (s *Store) ClusterIDs(ctx context.Context) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	err := s.db(ctx).Raw(`SELECT id FROM clusters ORDER BY created_at, id`).Scan(&ids).Error
	return ids, err
}
