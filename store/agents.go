package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/imprun/imprun-server/models"
)

// What the agent gateway writes about agents: registration, connections, heartbeats, the
// credential use agents report.

// TokenUnusableError refuses a registration token that is expired, used up or revoked.
type TokenUnusableError struct {
	TokenID uuid.UUID
	State   string
}

func (e *TokenUnusableError) Error() string {
	return fmt.Sprintf("registration token %s is %s", e.TokenID, e.State)
}

// ConsumeRegistrationToken takes one use of the registration token with hash tokenHash. A
// token that does not exist is ErrNotFound; one that is not active a *TokenUnusableError.
// In InTx, the token stays locked until the transaction ends (the agent it registers commits
// with the use).
func (s *Store) ConsumeRegistrationToken(ctx context.Context, tokenHash string) (models.RegistrationToken, error) {
	var t models.RegistrationToken
	err := s.InTx(ctx, func(ctx context.Context) error {
		tx := s.db(ctx)
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&t, "token_hash = ?", tokenHash).Error; err != nil {
			return notFound(err)
		}
		if st := t.State(time.Now()); st != "active" {
			return &TokenUnusableError{TokenID: t.ID, State: st}
		}
		return tx.Model(&t).Updates(map[string]any{"uses": gorm.Expr("uses + 1"), "last_used_at": time.Now().UTC()}).Error
	})
	return t, err
}

// CreateAgent inserts a registered agent with the events of its registration. An agent of
// the same name in the cluster is ErrConflict.
func (s *Store) CreateAgent(ctx context.Context, a *models.Agent, events ...models.AgentEvent) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		if err := s.db(ctx).Omit("session_id", "replica_id", "last_heartbeat_at", "last_connected_at", "revoked_at").Create(a).Error; err != nil {
			if IsUniqueViolation(err, "") {
				return fmt.Errorf("agent %q: %w", a.Name, ErrConflict)
			}
			return err
		}
		for _, e := range events {
			e.AgentID, e.ClusterID = a.ID, a.ClusterID
			if err := s.AddAgentEvent(ctx, &e); err != nil {
				return err
			}
		}
		return nil
	})
}

// LockAgent returns an agent locked until the transaction of InTx ends.
func (s *Store) LockAgent(ctx context.Context, id uuid.UUID) (models.Agent, error) {
	var a models.Agent
	return a, notFound(s.db(ctx).Clauses(clause.Locking{Strength: "UPDATE"}).Take(&a, "id = ?", id).Error)
}

// SetRefreshSecret replaces the hash of an agent's refresh secret, unless it was revoked.
func (s *Store) SetRefreshSecret(ctx context.Context, agentID uuid.UUID, hash string) error {
	return s.db(ctx).Exec(`UPDATE agents SET refresh_secret_hash = ?, updated_at = now() WHERE id = ? AND status <> 'revoked'`, hash, agentID).Error
}

// AgentConnection is a stream of an agent that has just opened.
type AgentConnection struct {
	AgentID, ClusterID, SessionID uuid.UUID
	// ReplicaID is the gateway replica holding the stream: its lease vouches for the agent.
	ReplicaID uuid.UUID
	IP        string
	At        time.Time
	// Version and Hostname replace the agent's when set.
	Version, Hostname string
	Applied           []models.AppliedRevision
	// CredentialChecksum is the checksum of the agent's credential set (empty: unknown).
	CredentialChecksum string
}

// MarkAgentConnected claims the agent row for the session and its replica (the newest stream
// wins), records
// the connection as an event and makes a pending or inactive cluster active. A revoked agent
// is not claimed: ok is false.
func (s *Store) MarkAgentConnected(ctx context.Context, c AgentConnection) (ok bool, err error) {
	// One statement, the row, its event and the cluster's status together: every agent of a
	// fleet's reconnect storm runs it (it was a transaction of three statements through GORM).
	args, err := c.args()
	if err != nil {
		return false, err
	}
	var n int
	err = s.readRow(ctx, connectStatement("", `SELECT count(*) FROM a`), args, &n)
	return err == nil && n > 0, err
}

// AgentTokenClaim is what ClaimAgentByTokenAndRead did and found.
type AgentTokenClaim struct {
	Claimed     bool
	ClusterName string // of the token's cluster ("" without its row)
	// State is the agent's row as it was before the statement, Found false when there is no
	// such agent: why a claim was refused.
	State AgentTokenState
	Found bool
}

// ConnectRead is what ConnectInputs reads of a connecting agent.
type ConnectRead struct {
	Inputs  SyncInputs
	Pending []models.AgentCommand
}

// ClaimAgentByTokenAndRead is MarkAgentConnected for an agent JWT of token generation gen,
// followed by ConnectInputs of the agent in the same round trip. The row is claimed only if the
// agent is not revoked and is still of that generation and of c.ClusterID, and the statement
// also returns the cluster's name and, for a refusal, the row's state: the check and the claim
// of a connect are one statement (a fleet's reconnect storm made them two round trips, and the
// reads a third). The reads see the claim; read is nil when the claim was refused, or when the
// agent or its cluster was gone by the reads.
func (s *Store) ClaimAgentByTokenAndRead(ctx context.Context, c AgentConnection, gen int) (AgentTokenClaim, *ConnectRead, error) {
	r := s.ClaimAgentsByTokenAndRead(ctx, []ConnectClaim{{c, gen}})[0]
	return r.Claim, r.Read, r.Err
}

// ConnectClaim is one connect of ClaimAgentsByTokenAndRead: the connection and its JWT's
// token generation.
type ConnectClaim struct {
	Conn       AgentConnection
	Generation int
}

// ClaimResult is what ClaimAgentByTokenAndRead returns of one ConnectClaim.
type ClaimResult struct {
	Claim AgentTokenClaim
	Read  *ConnectRead
	Err   error
}

// ClaimAgentsByTokenAndRead is ClaimAgentByTokenAndRead of several connects in one round trip
// (one batch, one transaction: a storm's connects cost one write, one commit and one wake of
// the backend for all of them, where each cost its own). Each result is what the connect's own
// call would have returned: the statements of a connect read only its agent, and a connect
// whose claim refuses reads nothing it returns. When the batch fails for a reason other than
// the database being unavailable (one connect's statements failed the whole transaction, a
// deadlock with another), each connect is claimed again on its own, so no connect fails for
// another's.
func (s *Store) ClaimAgentsByTokenAndRead(ctx context.Context, claims []ConnectClaim) []ClaimResult {
	res := make([]ClaimResult, len(claims))
	parts := make([]*connectPart, len(claims))
	var reads []batchRead
	for i, c := range claims {
		p, err := newConnectPart(c)
		if err != nil {
			res[i].Err = err
			continue
		}
		parts[i] = p
		reads = append(reads, p.reads...)
	}
	if len(reads) == 0 {
		return res
	}
	err := s.readBatch(ctx, reads...)
	if err != nil && len(claims) > 1 && !IsUnavailable(err) && ctx.Err() == nil {
		for i, c := range claims {
			if parts[i] != nil {
				res[i] = s.ClaimAgentsByTokenAndRead(ctx, []ConnectClaim{c})[0]
			}
		}
		return res
	}
	for i, p := range parts {
		if p != nil {
			res[i] = p.result(err)
		}
	}
	return res
}

// connectPart is one connect's statements in a batch of ClaimAgentsByTokenAndRead: its claim,
// then its agent's sync inputs and pending commands.
type connectPart struct {
	reads   []batchRead
	claim   func() AgentTokenClaim
	sync    *syncRead
	pending []models.AgentCommand
}

func newConnectPart(c ConnectClaim) (*connectPart, error) {
	cr, claim, err := claimRead(c.Conn, c.Generation)
	if err != nil {
		return nil, err
	}
	p := &connectPart{claim: claim, sync: newSyncRead(&agentSyncQueries, []any{c.Conn.ClusterID, c.Conn.AgentID}, true)}
	p.reads = append(append([]batchRead{cr}, p.sync.reads...), pendingCommandsRead(c.Conn.ClusterID, c.Conn.AgentID, &p.pending))
	return p, nil
}

// result is the connect's, once its batch has run with err.
func (p *connectPart) result(err error) ClaimResult {
	if err == nil {
		_, err = p.sync.done()
	}
	cl := p.claim()
	switch {
	case errors.Is(err, ErrNotFound): // the cluster is gone
		return ClaimResult{Claim: cl}
	case err != nil:
		return ClaimResult{Err: err}
	case !cl.Claimed || len(p.sync.in.Agents) != 1:
		return ClaimResult{Claim: cl}
	}
	return ClaimResult{Claim: cl, Read: &ConnectRead{Inputs: p.sync.in, Pending: p.pending}}
}

// claimRead is the claim of ClaimAgentByTokenAndRead, and what it found once read.
func claimRead(c AgentConnection, gen int) (batchRead, func() AgentTokenClaim, error) {
	args, err := c.args()
	if err != nil {
		return batchRead{}, nil, err
	}
	var (
		n       int
		name    string
		status  *string
		cluster *uuid.UUID
		tokGen  *int
	)
	// The outer SELECT sees the agents table as it was before the UPDATE (one snapshot).
	read := batchRead{connectStatement(` AND token_generation = $11 AND cluster_id = $10`,
		`SELECT (SELECT count(*) FROM a), coalesce((SELECT name FROM clusters WHERE id = $10), ''), t.status, t.cluster_id, t.token_generation
		FROM (SELECT 1) one LEFT JOIN agents t ON t.id = $1`), append(args, gen), func(rs rowScanner) error {
		return rs.Scan(&n, &name, &status, &cluster, &tokGen)
	}}
	return read, func() AgentTokenClaim {
		cl := AgentTokenClaim{Claimed: n > 0, ClusterName: name}
		if status != nil && cluster != nil && tokGen != nil {
			cl.Found, cl.State = true, AgentTokenState{Status: *status, ClusterID: *cluster, TokenGeneration: *tokGen}
		}
		return cl
	}, nil
}

// args are the parameters $1-$10 of connectStatement.
func (c AgentConnection) args() ([]any, error) {
	applied, err := models.JSON[[]models.AppliedRevision]{V: c.Applied}.Value()
	if err != nil {
		return nil, err
	}
	return []any{c.AgentID, c.SessionID, c.ReplicaID, c.At, c.IP, applied, models.Cut(c.CredentialChecksum, 64),
		models.Cut(c.Version, 50), models.Cut(c.Hostname, 255), c.ClusterID}, nil
}

// connectStatement claims an agent's row for a session (CTE a, narrowed by where), records
// the connection as an event and makes a pending or inactive cluster active, then runs final.
func connectStatement(where, final string) string {
	return `WITH a AS (
			UPDATE agents SET status = 'connected', session_id = $2, replica_id = $3, last_connected_at = $4, last_heartbeat_at = $4,
				ip_address = $5, applied = $6::jsonb, updated_at = $4, credential_checksum = $7,
				version = coalesce(nullif($8, ''), version), hostname = coalesce(nullif($9, ''), hostname)
			WHERE id = $1 AND status <> 'revoked'` + where + ` RETURNING id),
		e AS (INSERT INTO agent_events (agent_id, cluster_id, type, message, metadata, ip_address, created_at)
			SELECT id, $10, 'connected', 'stream opened', jsonb_build_object('session_id', $2::text), $5, $4 FROM a),
		c AS (UPDATE clusters SET status = 'active', updated_at = now()
			WHERE id = $10 AND status IN ('pending', 'inactive') AND EXISTS (SELECT 1 FROM a))
		` + final
}

// AgentDisconnection is a stream of an agent that has ended.
type AgentDisconnection struct {
	AgentID, ClusterID, SessionID uuid.UUID
	IP, Reason                    string
	// LastSeen is when the stream last heard from the agent: its last_heartbeat_at from now on
	// (no replica vouches for it any more).
	LastSeen time.Time
}

// MarkAgentDisconnected releases the agent row when the session still holds it (a newer
// session may have claimed it already), records why as an event, and makes the cluster
// inactive when no agent of it is connected any more.
func (s *Store) MarkAgentDisconnected(ctx context.Context, d AgentDisconnection) error {
	// One statement, as MarkAgentConnected. Its parts see the agents table as it was before
	// it, so the cluster's other agents are asked, not this one.
	var n int
	return s.readRow(ctx, `WITH a AS (
			UPDATE agents SET status = 'disconnected', session_id = NULL, replica_id = NULL,
				last_heartbeat_at = GREATEST(last_heartbeat_at, $3), updated_at = now()
			WHERE id = $1 AND session_id = $2 AND status = 'connected' RETURNING id),
		e AS (INSERT INTO agent_events (agent_id, cluster_id, type, message, metadata, ip_address, created_at)
			SELECT id, $4, 'disconnected', $5, jsonb_build_object('session_id', $2::text), $6, $7 FROM a),
		c AS (UPDATE clusters c SET status = 'inactive', updated_at = now()
			WHERE c.id = $4 AND c.status = 'active' AND EXISTS (SELECT 1 FROM a)
			  AND NOT EXISTS (SELECT 1 FROM agents o WHERE o.cluster_id = c.id AND o.status = 'connected' AND o.id <> $1))
		SELECT count(*) FROM a`,
		[]any{d.AgentID, d.SessionID, d.LastSeen, d.ClusterID, models.Cut(d.Reason, 1000), d.IP, time.Now().UTC()}, &n)
}

// AgentRef names an agent and its cluster.
type AgentRef struct {
	ID        uuid.UUID
	ClusterID uuid.UUID
}

// Heartbeat is the newest heartbeat of one agent's session that changed what its row holds.
// Applied, when not empty, is the JSON of the revisions the agent reports applied.
type Heartbeat struct {
	AgentID, SessionID uuid.UUID
	At                 time.Time
	Applied            string
	// CredentialChecksum replaces the agent's when set.
	CredentialChecksum string
}

// RecordHeartbeats writes a batch of heartbeats in one statement and returns the agents it
// wrote (a plain heartbeat is not written: the replica's lease vouches for it). An agent whose row another session has claimed (or that is no longer connected) is
// left out: its stream is not the current one.
func (s *Store) RecordHeartbeats(ctx context.Context, beats []Heartbeat) (current []uuid.UUID, err error) {
	ids := make([]string, len(beats))
	sids := make([]string, len(beats))
	ats := make([]time.Time, len(beats))
	applied := make([]string, len(beats))
	creds := make([]string, len(beats))
	for i, b := range beats {
		ids[i], sids[i], ats[i], applied[i], creds[i] = b.AgentID.String(), b.SessionID.String(), b.At, b.Applied, b.CredentialChecksum
	}
	err = s.db(ctx).Raw(`UPDATE agents a SET last_heartbeat_at = v.at,
			applied = CASE WHEN v.applied = '' THEN a.applied ELSE v.applied::jsonb END,
			credential_checksum = CASE WHEN v.creds = '' THEN a.credential_checksum ELSE v.creds END
		FROM unnest(?::uuid[], ?::uuid[], ?::timestamptz[], ?::text[], ?::text[]) AS v(id, sid, at, applied, creds)
		WHERE a.id = v.id AND a.session_id = v.sid AND a.status = 'connected'
		RETURNING a.id`, pgArray(ids), pgArray(sids), pgTimeArray(ats), pgArray(applied), pgArray(creds)).Scan(&current).Error
	return current, err
}

// CredentialUse is the newest use of a credential an agent of a cluster reported.
type CredentialUse struct {
	CredentialID, ClusterID uuid.UUID
	At                      time.Time
}

// RecordCredentialUse writes reported credential use in one statement: a credential's
// last_used_at moves forward to the newest reported use, and only on a cluster the credential
// was sent to (it has a rollout row there), so an agent cannot touch the credentials of
// another cluster. The rows are locked in id order, so two replicas writing at once cannot
// deadlock.
func (s *Store) RecordCredentialUse(ctx context.Context, uses []CredentialUse) error {
	creds := make([]string, len(uses))
	clusters := make([]string, len(uses))
	ats := make([]time.Time, len(uses))
	for i, u := range uses {
		creds[i], clusters[i], ats[i] = u.CredentialID.String(), u.ClusterID.String(), u.At
	}
	return s.db(ctx).Exec(`WITH u AS (
			SELECT v.credential_id, max(v.at) AS at
			FROM unnest(?::uuid[], ?::uuid[], ?::timestamptz[]) AS v(credential_id, cluster_id, at)
			JOIN credential_rollouts r ON r.credential_id = v.credential_id AND r.cluster_id = v.cluster_id
			GROUP BY v.credential_id
		), locked AS (
			SELECT c.id, u.at FROM credentials c JOIN u ON u.credential_id = c.id
			WHERE c.last_used_at IS NULL OR c.last_used_at < u.at
			ORDER BY c.id FOR UPDATE OF c
		)
		UPDATE credentials c SET last_used_at = GREATEST(coalesce(c.last_used_at, 'epoch'), l.at)
		FROM locked l WHERE c.id = l.id`, pgArray(creds), pgArray(clusters), pgTimeArray(ats)).Error
}

// MarkResultsPassedOn records, in one statement, that the results of these deliveries were
// passed on to their workflows.
func (s *Store) MarkResultsPassedOn(ctx context.Context, rs []UnpassedResult) error {
	if len(rs) == 0 {
		return nil
	}
	cmds := make([]uuid.UUID, len(rs))
	agents := make([]uuid.UUID, len(rs))
	for i, r := range rs {
		cmds[i], agents[i] = r.CommandID, r.AgentID
	}
	return s.execDirect(ctx, `UPDATE agent_command_deliveries d SET passed_on_at = now()
		FROM unnest($1::uuid[], $2::uuid[]) AS v(command_id, agent_id)
		WHERE d.command_id = v.command_id AND d.agent_id = v.agent_id AND d.passed_on_at IS NULL`, cmds, agents)
}
