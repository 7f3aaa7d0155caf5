// Package storetest is a test's line to the database behind the API: it seeds what no API
// creates (rows as an older release or a crash would leave them), reads what no API shows
// (hashes, counters, the audit table itself) and instruments the store. Every statement of the
// tests lives here, named for what it checks, so the store package stays the only code that
// speaks SQL.
package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/migrations"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// DB is one test database: the pool, and the GORM handle of the Store built on it.
type DB struct {
	sql   *sql.DB
	gorm  *gorm.DB
	store *store.Store
}

// New wraps an open (migrated) pool.
func New(sqlDB *sql.DB) (*DB, error) {
	g, err := store.Open(sqlDB)
	if err != nil {
		return nil, err
	}
	return &DB{sql: sqlDB, gorm: g, store: store.New(g)}, nil
}

// Open opens the database at url, closes it when the test ends, migrates it to the newest
// schema and wraps it.
func Open(t testing.TB, url string) *DB {
	t.Helper()
	sqlDB, err := store.OpenDB(url)
	require.NoError(t, err)
	t.Cleanup(func() { sqlDB.Close() })
	Migrate(t, sqlDB)
	d, err := New(sqlDB)
	require.NoError(t, err)
	return d
}

// Migrate brings the database behind sqlDB to the newest schema.
func Migrate(t testing.TB, sqlDB *sql.DB) {
	t.Helper()
	m, err := migrations.New(sqlDB)
	require.NoError(t, err)
	_, err = m.Up(context.Background(), 0)
	require.NoError(t, err)
}

// Store is the Store on this database.
func (d *DB) Store() *store.Store { return d.store }

// QueryCounter counts the statements the Store runs.
type QueryCounter struct{ n atomic.Int64 }

// Load returns how many statements ran so far.
func (q *QueryCounter) Load() int64 { return q.n.Load() }

// CountQueries counts every statement the Store runs from now on, whatever the callback
// chain. Call it before the API serves requests, so the registration happens-before every
// query.
func (d *DB) CountQueries() *QueryCounter {
	q := &QueryCounter{}
	count := func(*gorm.DB) { q.n.Add(1) }
	d.afterEveryStatement("test:count", count)
	d.store.ObserveDirect(func(string) { q.n.Add(1) })
	return q
}

// afterEveryStatement registers fn, under name, after every kind of statement GORM runs.
func (d *DB) afterEveryStatement(name string, fn func(*gorm.DB)) {
	cb := d.gorm.Callback()
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(cb.Create().After("gorm:create").Register(name+"_create", fn))
	must(cb.Query().After("gorm:query").Register(name+"_query", fn))
	must(cb.Update().After("gorm:update").Register(name+"_update", fn))
	must(cb.Delete().After("gorm:delete").Register(name+"_delete", fn))
	must(cb.Row().After("gorm:row").Register(name+"_row", fn))
	must(cb.Raw().After("gorm:raw").Register(name+"_raw", fn))
}

// StatementCounts counts the statements the Store runs by their text (the first 70
// characters, whitespace folded), for a benchmark to say what a request costs; those sent past
// GORM (readRows, execDirect) too.
type StatementCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// Take returns the counts so far and starts again from zero.
func (c *StatementCounts) Take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.n
	c.n = map[string]int{}
	return out
}

// CountStatements counts every statement the Store runs from now on by its text; call it
// before the API serves requests, as CountQueries.
func (d *DB) CountStatements() *StatementCounts {
	c := &StatementCounts{n: map[string]int{}}
	count := func(query string) {
		sql := strings.Join(strings.Fields(query), " ")
		if len(sql) > 70 {
			sql = sql[:70]
		}
		c.mu.Lock()
		c.n[sql]++
		c.mu.Unlock()
	}
	d.afterEveryStatement("test:stmt", func(db *gorm.DB) { count(db.Statement.SQL.String()) })
	d.store.ObserveDirect(count)
	return c
}

// ResetStatementStats starts pg_stat_statements' counts of this database again, creating the
// extension when the server preloads it (IMPRUN_HARNESS_PG_STATEMENTS); false when it does
// not.
func (d *DB) ResetStatementStats() bool {
	if _, err := d.sql.Exec(`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return false
	}
	_, err := d.sql.Exec(`SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)`)
	return err == nil
}

// TopStatements is what PostgreSQL spent on this database's statements since
// ResetStatementStats, the n costliest first: calls, planning and execution time in ms, text.
func (d *DB) TopStatements(n int) ([]string, error) {
	rows, err := d.sql.Query(`SELECT calls, total_plan_time, total_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_plan_time + total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var calls int64
		var plan, exec float64
		var q string
		if err := rows.Scan(&calls, &plan, &exec, &q); err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%7d calls %8.1f ms plan %8.1f ms exec  %s", calls, plan, exec, q))
	}
	return out, rows.Err()
}

// SessionsOpened is how many connections PostgreSQL has accepted to this database so far
// (pg_stat_database.sessions, flushed at most once a second per backend).
func (d *DB) SessionsOpened() (int64, error) {
	var n int64
	err := d.sql.QueryRow(`SELECT sessions FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	return n, err
}

func (d *DB) scalar(t testing.TB, dest any, query string, args ...any) {
	t.Helper()
	require.NoError(t, d.sql.QueryRow(query, args...).Scan(dest))
}

func (d *DB) exec(t testing.TB, query string, args ...any) {
	t.Helper()
	_, err := d.sql.Exec(query, args...)
	require.NoError(t, err)
}

// Count returns the number of rows of a table.
func (d *DB) Count(t testing.TB, table string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize())
	return n
}

// CountContaining returns the number of rows of a table whose text (every column) contains s.
func (d *DB) CountContaining(t testing.TB, table, s string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()+` x WHERE strpos(x::text, $1) > 0`, s)
	return n
}

// ---- tenants and users

// UserID returns the id of the user with an e-mail.
func (d *DB) UserID(t testing.TB, email string) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `SELECT id FROM users WHERE email = $1`, email)
	return id
}

// TenantID returns the id of the tenant with a slug.
func (d *DB) TenantID(t testing.TB, slug string) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `SELECT id FROM tenants WHERE slug = $1`, slug)
	return id
}

// CountTenantsWithSlugPrefix counts the tenants whose slug starts with prefix.
func (d *DB) CountTenantsWithSlugPrefix(t testing.TB, prefix string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM tenants WHERE slug LIKE $1 || '%'`, prefix)
	return n
}

// ---- the audit log

// AuditLogs lists the audit entries of a tenant about one resource type, oldest first.
func (d *DB) AuditLogs(t testing.TB, tenantID uuid.UUID, resourceType string) []models.AuditLog {
	t.Helper()
	var rows []models.AuditLog
	require.NoError(t, d.gorm.Where("tenant_id = ? AND resource_type = ?", tenantID, resourceType).Order("created_at, id").Find(&rows).Error)
	return rows
}

// LatestRequestAudit returns, as text, the summary of the newest audit entry of action on
// resourceID written by a request (with an actor e-mail and a request id).
func (d *DB) LatestRequestAudit(action, resourceID string) (string, error) {
	var summary string
	err := d.sql.QueryRow(`SELECT summary::text FROM audit_logs WHERE action = $1 AND resource_id = $2 AND actor_email <> '' AND request_id <> ''
		ORDER BY created_at DESC LIMIT 1`, action, resourceID).Scan(&summary)
	return summary, err
}

// LatestAuditSummary returns, as text, the summary of the newest audit entry of action.
func (d *DB) LatestAuditSummary(t testing.TB, action string) string {
	t.Helper()
	var summary string
	d.scalar(t, &summary, `SELECT summary::text FROM audit_logs WHERE action = $1 ORDER BY created_at DESC LIMIT 1`, action)
	return summary
}

// CountAudit counts the audit entries of action about the resource named resourceName.
func (d *DB) CountAudit(t testing.TB, action, resourceName string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM audit_logs WHERE action = $1 AND resource_name = $2`, action, resourceName)
	return n
}

// CountAuditOn counts the audit entries of action about the resource with id resourceID.
func (d *DB) CountAuditOn(action, resourceID string) (int, error) {
	var n int
	err := d.sql.QueryRow(`SELECT count(*) FROM audit_logs WHERE action = $1 AND resource_id = $2`, action, resourceID).Scan(&n)
	return n, err
}

// CountWorkflowAudit counts the audit entries of action about resourceID that a workflow wrote.
func (d *DB) CountWorkflowAudit(t testing.TB, action, resourceID string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM audit_logs WHERE actor_type = 'workflow' AND resource_id = $1 AND action = $2`, resourceID, action)
	return n
}

// CountAuditActions counts the audit entries of any of the actions.
func (d *DB) CountAuditActions(t testing.TB, actions ...string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM audit_logs WHERE action = ANY($1::text[])`, models.StringArray(actions))
	return n
}

// AuditRequest is what an audit entry says of the request that wrote it.
type AuditRequest struct {
	Action, ActorEmail, RequestID, Method, Path string
	StatusCode                                  int
}

// AuditRequests lists every audit entry's request.
func (d *DB) AuditRequests(t testing.TB) []AuditRequest {
	t.Helper()
	rows, err := d.sql.Query(`SELECT action, actor_email, request_id, method, path, status_code FROM audit_logs`)
	require.NoError(t, err)
	defer rows.Close()
	var out []AuditRequest
	for rows.Next() {
		var r AuditRequest
		require.NoError(t, rows.Scan(&r.Action, &r.ActorEmail, &r.RequestID, &r.Method, &r.Path, &r.StatusCode))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// AuditClient returns the user agent and address recorded with the audit entry of action on
// the resource named resourceName.
func (d *DB) AuditClient(t testing.TB, action, resourceName string) (userAgent, ip string) {
	t.Helper()
	require.NoError(t, d.sql.QueryRow(`SELECT user_agent, ip_address FROM audit_logs WHERE action = $1 AND resource_name = $2`,
		action, resourceName).Scan(&userAgent, &ip))
	return userAgent, ip
}

// AuditActorsAndSources lists (actor e-mail, summary source) of every audit entry of action,
// oldest first.
func (d *DB) AuditActorsAndSources(t testing.TB, action string) [][2]string {
	t.Helper()
	rows, err := d.sql.Query(`SELECT actor_email, summary->>'source' FROM audit_logs WHERE action = $1 ORDER BY created_at`, action)
	require.NoError(t, err)
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var a, s string
		require.NoError(t, rows.Scan(&a, &s))
		out = append(out, [2]string{a, s})
	}
	require.NoError(t, rows.Err())
	return out
}

// TamperWithAuditLog tries to change, delete and truncate the audit log and returns the three
// errors (the table is append-only: each must fail).
func (d *DB) TamperWithAuditLog(ctx context.Context) (update, del, truncate error) {
	_, update = d.sql.ExecContext(ctx, `UPDATE audit_logs SET action = 'forged'`)
	_, del = d.sql.ExecContext(ctx, `DELETE FROM audit_logs`)
	_, truncate = d.sql.ExecContext(ctx, `TRUNCATE audit_logs`)
	return update, del, truncate
}

// StoredText is, per place a secret must never reach, everything stored there as one text:
// "audit summaries", "command payloads", "delivery results", "idempotent responses".
func (d *DB) StoredText(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, q := range map[string]string{
		"audit summaries":      `SELECT coalesce(string_agg(summary::text, ''), '') FROM audit_logs`,
		"command payloads":     `SELECT coalesce(string_agg(payload::text, ''), '') FROM agent_commands`,
		"delivery results":     `SELECT coalesce(string_agg(result::text, ''), '') FROM agent_command_deliveries`,
		"idempotent responses": `SELECT coalesce(string_agg(convert_from(response_body, 'UTF8'), ''), '') FROM idempotency_keys WHERE response_body IS NOT NULL`,
	} {
		var all string
		d.scalar(t, &all, q)
		out[name] = all
	}
	return out
}

// ---- clusters, agents, registration tokens

// InsertCluster inserts a cluster with capabilities (JSON) and returns its id.
func (d *DB) InsertCluster(t testing.TB, name, region, capabilities string) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `INSERT INTO clusters (name, region, capabilities) VALUES ($1, $2, $3) RETURNING id`, name, region, capabilities)
	return id
}

// InsertAgent inserts an agent as a registered one looks (version 0.1.0, host-<name>,
// 10.0.0.1); heartbeat, when set, is its last heartbeat and connection.
func (d *DB) InsertAgent(t testing.TB, clusterID, name, status string, heartbeat *time.Time, refreshSecretHash string) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `INSERT INTO agents (cluster_id, name, status, version, hostname, ip_address, last_heartbeat_at, last_connected_at, refresh_secret_hash)
		VALUES ($1, $2::varchar, $3, '0.1.0', 'host-'||$2::varchar, '10.0.0.1', $4, $4, $5) RETURNING id`,
		clusterID, name, status, heartbeat, refreshSecretHash)
	return id
}

// InsertConnectedAgent inserts an agent as a replica's claim leaves it: connected, with a new
// session, held by replica (nil: a replica from before leases), its last heartbeat and
// connection at heartbeat. It returns the agent and session ids.
func (d *DB) InsertConnectedAgent(t testing.TB, clusterID, name string, replica *uuid.UUID, heartbeat time.Time) (agentID, sessionID string) {
	t.Helper()
	d.scalar(t, &agentID, `INSERT INTO agents (cluster_id, name, status, session_id, replica_id, last_heartbeat_at, last_connected_at)
		VALUES ($1, $2, 'connected', gen_random_uuid(), $3, $4, $4) RETURNING id`, clusterID, name, replica, heartbeat)
	d.scalar(t, &sessionID, `SELECT session_id::text FROM agents WHERE id = $1`, agentID)
	return agentID, sessionID
}

// Analyze refreshes the planner's statistics of every table, as autovacuum would after a bulk
// insert (a benchmark's plans are then the ones a server at that size gets).
func (d *DB) Analyze(t testing.TB) {
	t.Helper()
	d.exec(t, `ANALYZE`)
}

// InsertConnectedAgents inserts n agents <prefix>1..<prefix>n as InsertConnectedAgent does,
// all held by replica, in one statement.
func (d *DB) InsertConnectedAgents(t testing.TB, clusterID, replica uuid.UUID, prefix string, n int, heartbeat time.Time) {
	t.Helper()
	d.exec(t, `INSERT INTO agents (cluster_id, name, status, session_id, replica_id, last_heartbeat_at, last_connected_at)
		SELECT $1, $3 || g, 'connected', gen_random_uuid(), $4, $5, $5 FROM generate_series(1, $2) g`, clusterID, n, prefix, replica, heartbeat)
}

// InsertPendingAgent inserts a pending agent named sim-<n> (token generation 1, n its count in
// the cluster) with a refresh secret, as if it had registered, and returns its id.
func (d *DB) InsertPendingAgent(t testing.TB, clusterID, refreshSecretHash string) (string, error) {
	var id string
	err := d.sql.QueryRow(`INSERT INTO agents (cluster_id, name, status, token_generation, refresh_secret_hash)
		VALUES ($1, 'sim-' || (SELECT count(*) + 1 FROM agents WHERE cluster_id = $1), 'pending', 1, $2) RETURNING id`, clusterID, refreshSecretHash).Scan(&id)
	return id, err
}

// InsertPendingAgents inserts n pending agents bench-1..bench-n and returns their ids.
func (d *DB) InsertPendingAgents(t testing.TB, clusterID uuid.UUID, n int) []uuid.UUID {
	t.Helper()
	return d.InsertNamedPendingAgents(t, clusterID, "bench-", n)
}

// InsertNamedPendingAgents inserts n pending agents <prefix>1..<prefix>n and returns their ids.
func (d *DB) InsertNamedPendingAgents(t testing.TB, clusterID uuid.UUID, prefix string, n int) []uuid.UUID {
	t.Helper()
	rows, err := d.sql.Query(`INSERT INTO agents (cluster_id, name, status) SELECT $1, $3 || g, 'pending' FROM generate_series(1, $2) g RETURNING id`, clusterID, n, prefix)
	require.NoError(t, err)
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		require.NoError(t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(t, rows.Err())
	return out
}

// InsertAgentEvent appends an event (its message is its type) to an agent's history, ago in
// the past so the order is known.
func (d *DB) InsertAgentEvent(t testing.TB, agentID, clusterID, typ string, ago time.Duration) {
	t.Helper()
	d.exec(t, `INSERT INTO agent_events (agent_id, cluster_id, type, message, created_at) VALUES ($1, $2, $3, $3, now() - $4 * interval '1 millisecond')`,
		agentID, clusterID, typ, ago.Milliseconds())
}

// AgentStatus returns an agent's status.
func (d *DB) AgentStatus(id string) (string, error) {
	var st string
	err := d.sql.QueryRow(`SELECT status FROM agents WHERE id = $1`, id).Scan(&st)
	return st, err
}

// ClusterAgentStatus returns the status of the (first) agent of a cluster.
func (d *DB) ClusterAgentStatus(clusterID string) (string, error) {
	var st string
	err := d.sql.QueryRow(`SELECT status FROM agents WHERE cluster_id = $1`, clusterID).Scan(&st)
	return st, err
}

// CountAgentsWithStatus counts the agents in a status.
func (d *DB) CountAgentsWithStatus(t testing.TB, status string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM agents WHERE status = $1`, status)
	return n
}

// AgentRowVersion returns the version of an agent's row (its xmin): it changes with every
// write of the row, whatever the columns written.
func (d *DB) AgentRowVersion(t testing.TB, id string) string {
	t.Helper()
	var v string
	d.scalar(t, &v, `SELECT xmin::text FROM agents WHERE id = $1`, id)
	return v
}

// AgentReplica returns the replica an agent's row says holds its stream ("" when none).
func (d *DB) AgentReplica(t testing.TB, id string) string {
	t.Helper()
	var r sql.NullString
	d.scalar(t, &r, `SELECT replica_id::text FROM agents WHERE id = $1`, id)
	return r.String
}

// CountLeases counts the gateway replicas' leases.
func (d *DB) CountLeases(t testing.TB) int {
	t.Helper()
	return d.Count(t, "gateway_leases")
}

// Lease returns a replica's lease, and whether it has one.
func (d *DB) Lease(t testing.TB, replicaID uuid.UUID) (store.GatewayLease, bool) {
	t.Helper()
	var l store.GatewayLease
	err := d.sql.QueryRow(`SELECT replica_id, name, started_at, alive_at FROM gateway_leases WHERE replica_id = $1`, replicaID).
		Scan(&l.ReplicaID, &l.Name, &l.StartedAt, &l.AliveAt)
	if err == sql.ErrNoRows {
		return l, false
	}
	require.NoError(t, err)
	return l, true
}

// AgentTokenGeneration returns an agent's token generation.
func (d *DB) AgentTokenGeneration(t testing.TB, id string) int {
	t.Helper()
	var gen int
	d.scalar(t, &gen, `SELECT token_generation FROM agents WHERE id = $1`, id)
	return gen
}

// AgentRefreshSecretHash returns the hash of an agent's refresh secret (nil when it has none).
func (d *DB) AgentRefreshSecretHash(t testing.TB, id string) *string {
	t.Helper()
	var hash *string
	d.scalar(t, &hash, `SELECT refresh_secret_hash FROM agents WHERE id = $1`, id)
	return hash
}

// AgentEventTypes lists the types of an agent's events, oldest first.
func (d *DB) AgentEventTypes(t testing.TB, id string) []string {
	t.Helper()
	rows, err := d.sql.Query(`SELECT type FROM agent_events WHERE agent_id = $1 ORDER BY created_at, id`, id)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	return out
}

// CountAgentEvents counts an agent's events.
func (d *DB) CountAgentEvents(t testing.TB, id string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM agent_events WHERE agent_id = $1`, id)
	return n
}

// LastDisconnectMessage returns the message of an agent's newest disconnected event.
func (d *DB) LastDisconnectMessage(t testing.TB, id string) string {
	t.Helper()
	var msg string
	d.scalar(t, &msg, `SELECT message FROM agent_events WHERE agent_id = $1 AND type = 'disconnected' ORDER BY created_at DESC LIMIT 1`, id)
	return msg
}

// UseUpRegistrationToken spends every use of a registration token.
func (d *DB) UseUpRegistrationToken(t testing.TB, id any) {
	t.Helper()
	d.exec(t, `UPDATE registration_tokens SET uses = max_uses WHERE id = $1`, id)
}

// ExpireRegistrationToken makes a registration token expired.
func (d *DB) ExpireRegistrationToken(t testing.TB, id any) {
	t.Helper()
	d.exec(t, `UPDATE registration_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, id)
}

// ExpireRegistrationTokens makes every registration token expired.
func (d *DB) ExpireRegistrationTokens(t testing.TB) {
	t.Helper()
	d.exec(t, `UPDATE registration_tokens SET expires_at = now() - interval '1 second'`)
}

// RegistrationTokenHash returns the stored hash of a registration token.
func (d *DB) RegistrationTokenHash(t testing.TB, id any) string {
	t.Helper()
	var h string
	d.scalar(t, &h, `SELECT token_hash FROM registration_tokens WHERE id = $1`, id)
	return h
}

// RegistrationTokenUses returns the uses of the (only) registration token.
func (d *DB) RegistrationTokenUses(t testing.TB) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT uses FROM registration_tokens`)
	return n
}

// ---- the command outbox

// DeliveryStatus returns the delivery status of a command to an agent (or, with agentID "",
// to its one agent).
func (d *DB) DeliveryStatus(commandID uuid.UUID, agentID string) (string, error) {
	var st string
	var err error
	if agentID == "" {
		err = d.sql.QueryRow(`SELECT status FROM agent_command_deliveries WHERE command_id = $1`, commandID).Scan(&st)
	} else {
		err = d.sql.QueryRow(`SELECT status FROM agent_command_deliveries WHERE command_id = $1 AND agent_id = $2`, commandID, agentID).Scan(&st)
	}
	return st, err
}

// DeliveryTimes returns when a command was sent to and acknowledged by its one agent.
func (d *DB) DeliveryTimes(t testing.TB, commandID uuid.UUID) (sentAt, ackedAt *time.Time) {
	t.Helper()
	require.NoError(t, d.sql.QueryRow(`SELECT sent_at, acked_at FROM agent_command_deliveries WHERE command_id = $1`, commandID).Scan(&sentAt, &ackedAt))
	return sentAt, ackedAt
}

// DeliveryPassedOn reports whether the result of a command's delivery (its only one) has been
// marked passed on.
func (d *DB) DeliveryPassedOn(t testing.TB, commandID uuid.UUID) bool {
	t.Helper()
	var passed bool
	require.NoError(t, d.sql.QueryRow(`SELECT passed_on_at IS NOT NULL FROM agent_command_deliveries WHERE command_id = $1`, commandID).Scan(&passed))
	return passed
}

// CountDeliveries counts the deliveries of a command (with status, when not "", only those).
func (d *DB) CountDeliveries(t testing.TB, commandID uuid.UUID, status string) int {
	t.Helper()
	var n int
	if status == "" {
		d.scalar(t, &n, `SELECT count(*) FROM agent_command_deliveries WHERE command_id = $1`, commandID)
	} else {
		d.scalar(t, &n, `SELECT count(*) FROM agent_command_deliveries WHERE command_id = $1 AND status = $2`, commandID, status)
	}
	return n
}

// CountAgentDeliveries counts the delivery rows of an agent, of every command.
func (d *DB) CountAgentDeliveries(t testing.TB, agentID uuid.UUID) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT count(*) FROM agent_command_deliveries WHERE agent_id = $1`, agentID)
	return n
}

// DeleteCommand deletes a command as a cluster's deletion does (no API deletes one alone).
func (d *DB) DeleteCommand(t testing.TB, id uuid.UUID) {
	t.Helper()
	d.exec(t, `DELETE FROM agent_commands WHERE id = $1`, id)
}

// AddDeliveryForeignKeys gives agent_command_deliveries back the foreign keys that checked each
// of its rows alone before migration 00020 (BenchmarkWriteDeliveries' "before").
func (d *DB) AddDeliveryForeignKeys(t testing.TB) {
	t.Helper()
	d.exec(t, `ALTER TABLE agent_command_deliveries
		ADD FOREIGN KEY (command_id) REFERENCES agent_commands(id) ON DELETE CASCADE,
		ADD FOREIGN KEY (agent_id) REFERENCES agents(id) ON DELETE CASCADE`)
}

// InsertPendingAgentsWithIDs inserts pending agents bench-1..bench-n with the given ids.
func (d *DB) InsertPendingAgentsWithIDs(t testing.TB, clusterID uuid.UUID, ids []uuid.UUID) {
	t.Helper()
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	d.exec(t, `INSERT INTO agents (id, cluster_id, name, status)
		SELECT v.id, $1, 'bench-' || v.n, 'pending' FROM unnest($2::uuid[]) WITH ORDINALITY AS v(id, n)`, clusterID, models.StringArray(strs))
}

// AckedByFirstByte counts a command's acknowledged deliveries by the first byte of the agent's
// id (the fleet benchmark puts its replica there). It reads the deliveries alone, through
// their key, so that polling it while a broadcast is stored takes little of Postgres
// (counting by the agents' hostnames joined every agent row: about a tenth of a second of a
// busy Postgres a call at 20,000 agents).
func (d *DB) AckedByFirstByte(t testing.TB, commandID uuid.UUID) map[int]int {
	t.Helper()
	rows, err := d.sql.Query(`SELECT get_byte(uuid_send(agent_id), 0), count(*) FROM agent_command_deliveries
		WHERE command_id = $1 AND status = 'acked' GROUP BY 1`, commandID)
	require.NoError(t, err)
	defer rows.Close()
	out := map[int]int{}
	for rows.Next() {
		var b, n int
		require.NoError(t, rows.Scan(&b, &n))
		out[b] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// CredentialDelivery is one credential command and (when it has one) a delivery of it.
type CredentialDelivery struct {
	Kind, ClusterID string
	Status, Result  *string
}

// CredentialDeliveries lists every credential command with its deliveries (for a test's log).
func (d *DB) CredentialDeliveries() []CredentialDelivery {
	rows, err := d.sql.Query(`SELECT c.kind, c.cluster_id, d.status, d.result::text FROM agent_commands c LEFT JOIN agent_command_deliveries d ON d.command_id = c.id WHERE c.kind LIKE 'credential%'`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	var out []CredentialDelivery
	for rows.Next() {
		var c CredentialDelivery
		_ = rows.Scan(&c.Kind, &c.ClusterID, &c.Status, &c.Result)
		out = append(out, c)
	}
	return out
}

// ---- publishes

// PublishRow is a publish as InsertPublish writes it.
type PublishRow struct {
	TenantID                                      uuid.UUID
	ProductID, GatewayID, ClusterID, APIServiceID string
	Environment, Hostname, Visibility, Status     string
	PublishedAt                                   *time.Time
}

// InsertPublish inserts a publish of one API service and returns its id.
func (d *DB) InsertPublish(t testing.TB, p PublishRow) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `INSERT INTO product_publishes
		(tenant_id, product_id, gateway_id, cluster_id, environment, hostname, visibility, status, published_at, api_service_ids)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ARRAY[$10::uuid]) RETURNING id`,
		p.TenantID, p.ProductID, p.GatewayID, p.ClusterID, p.Environment, p.Hostname, p.Visibility, p.Status, p.PublishedAt, p.APIServiceID)
	return id
}

// MarkTenantPublished sets every publish of a tenant PUBLISHED at revision 1 by publishedBy,
// as if each had been deployed.
func (d *DB) MarkTenantPublished(tenantID any, publishedBy string) error {
	_, err := d.sql.Exec(`UPDATE product_publishes SET status = 'PUBLISHED', current_revision = 1, published_at = now(),
		published_by = $2 WHERE tenant_id = $1`, tenantID, publishedBy)
	return err
}

// ClaimAsOrphan makes a publish claimed an hour ago by the run publish/<id>/<revision>, as if
// the api replica that claimed it died before starting the run; status, when not "", is the
// status the run had set.
func (d *DB) ClaimAsOrphan(t testing.TB, publishID string, revision int, status string) {
	t.Helper()
	if status == "" {
		d.exec(t, `UPDATE product_publishes SET workflow_id = 'publish/' || id || '/' || $2::int, claimed_at = now() - interval '1 hour' WHERE id = $1`, publishID, revision)
		return
	}
	d.exec(t, `UPDATE product_publishes SET workflow_id = 'publish/' || id || '/' || $2::int, claimed_at = now() - interval '1 hour', status = $3 WHERE id = $1`,
		publishID, revision, status)
}

// PublishStatuses returns the status of each publish of ids.
func (d *DB) PublishStatuses(ctx context.Context, ids []string) (map[string]string, error) {
	rows, err := d.sql.QueryContext(ctx, `SELECT id::text, status FROM product_publishes WHERE id = ANY($1::text[]::uuid[])`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, st string
		if rows.Scan(&id, &st) != nil {
			continue
		}
		out[id] = st
	}
	return out, rows.Err()
}

// PublishTimeline is when a published publish passed each step of a deploy: created, command
// queued, first sent, first acknowledged, first passed on, published.
type PublishTimeline [6]*time.Time

// PublishTimelines returns the timeline of every publish created since and published.
func (d *DB) PublishTimelines(since time.Time) ([]PublishTimeline, error) {
	rows, err := d.sql.Query(`SELECT p.created_at, c.created_at, min(d.sent_at), min(d.acked_at), min(d.passed_on_at), p.published_at
		FROM product_publishes p
		JOIN agent_commands c ON c.payload->>'publish_id' = p.id::text
		JOIN agent_command_deliveries d ON d.command_id = c.id
		WHERE p.created_at >= $1 AND p.published_at IS NOT NULL
		GROUP BY p.id, c.id`, since)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PublishTimeline
	for rows.Next() {
		var at PublishTimeline
		if err := rows.Scan(&at[0], &at[1], &at[2], &at[3], &at[4], &at[5]); err != nil {
			return out, err
		}
		out = append(out, at)
	}
	return out, rows.Err()
}

// ---- subscriptions and credentials

// InsertSubscription inserts a subscription in status and returns its id.
func (d *DB) InsertSubscription(t testing.TB, customerTenantID, providerTenantID, publishID, appID any, status string) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `INSERT INTO subscriptions (customer_tenant_id, provider_tenant_id, product_publish_id, client_app_id, status)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`, customerTenantID, providerTenantID, publishID, appID, status)
	return id
}

// InsertActiveSubscription inserts a subscription active since now, created by createdBy.
func (d *DB) InsertActiveSubscription(customerTenantID, providerTenantID, publishID, appID any, createdBy string) error {
	_, err := d.sql.Exec(`INSERT INTO subscriptions (customer_tenant_id, provider_tenant_id, product_publish_id, client_app_id,
			status, started_at, created_by) VALUES ($1, $2, $3, $4, 'active', now(), $5)`, customerTenantID, providerTenantID, publishID, appID, createdBy)
	return err
}

// SetSubscriptionStatus sets a subscription's status.
func (d *DB) SetSubscriptionStatus(t testing.TB, id, status string) {
	t.Helper()
	d.exec(t, `UPDATE subscriptions SET status = $1 WHERE id = $2`, status, id)
}

// InsertAPIKey inserts an API key credential in status (rotatedFrom, when set, is its
// predecessor) and returns its id.
func (d *DB) InsertAPIKey(t testing.TB, tenantID any, appID, keyPrefix, secretHash, status string, rotatedFrom *string) string {
	t.Helper()
	var id string
	d.scalar(t, &id, `INSERT INTO credentials (tenant_id, client_app_id, type, key_prefix, secret_hash, status, rotated_from)
		VALUES ($1, $2, 'api_key', $3, $4, $5, $6) RETURNING id`, tenantID, appID, keyPrefix, secretHash, status, rotatedFrom)
	return id
}

// RevokeCredential marks a credential revoked now.
func (d *DB) RevokeCredential(t testing.TB, id string) {
	t.Helper()
	d.exec(t, `UPDATE credentials SET status = 'revoked', revoked_at = now() WHERE id = $1`, id)
}

// InsertRollout inserts a credential's rollout row on a cluster.
func (d *DB) InsertRollout(t testing.TB, credentialID, clusterID string, version int, action, status string) {
	t.Helper()
	d.exec(t, `INSERT INTO credential_rollouts (credential_id, cluster_id, version, action, status) VALUES ($1, $2, $3, $4, $5)`,
		credentialID, clusterID, version, action, status)
}

// ConfirmRollouts marks every rollout row of a credential confirmed now.
func (d *DB) ConfirmRollouts(t testing.TB, credentialID string) {
	t.Helper()
	d.exec(t, `UPDATE credential_rollouts SET status = 'confirmed', confirmed_at = now() WHERE credential_id = $1`, credentialID)
}

// CountAppHistory counts the subscriptions and credentials of an app.
func (d *DB) CountAppHistory(t testing.TB, appID string) int {
	t.Helper()
	var n int
	d.scalar(t, &n, `SELECT (SELECT count(*) FROM subscriptions WHERE client_app_id = $1) + (SELECT count(*) FROM credentials WHERE client_app_id = $1)`, appID)
	return n
}

// Propagation is how far a credential's rollout got: confirmed rows, acknowledged deliveries,
// and when the last row was queued and confirmed and the last delivery sent and acknowledged.
type Propagation struct {
	Confirmed, Acked                    int
	Planned, ConfirmedAt, Sent, AckedAt sql.NullTime
}

// CredentialPropagation reads how far a credential's rollout got.
func (d *DB) CredentialPropagation(ctx context.Context, credentialID string) (Propagation, error) {
	var p Propagation
	err := d.sql.QueryRowContext(ctx, `SELECT
			count(*) FILTER (WHERE r.status = 'confirmed'), max(r.queued_at), max(r.confirmed_at),
			count(d.acked_at), max(d.sent_at), max(d.acked_at)
		FROM credential_rollouts r LEFT JOIN agent_command_deliveries d ON d.command_id = r.command_id
		WHERE r.credential_id = $1`, credentialID).Scan(&p.Confirmed, &p.Planned, &p.ConfirmedAt, &p.Acked, &p.Sent, &p.AckedAt)
	return p, err
}

// IdempotentResponses is every stored idempotent response body as one text.
func (d *DB) IdempotentResponses(t testing.TB) string {
	t.Helper()
	var s string
	d.scalar(t, &s, `SELECT coalesce(string_agg(convert_from(response_body, 'UTF8'), ''), '') FROM idempotency_keys`)
	return s
}

// ---- the catalog

// SeedServices inserts n services prefix-1..prefix-n into a tenant in one statement, with
// distinct creation times (so the keyset order is the one real traffic would make), every
// second one active, and refreshes the planner's statistics.
func (d *DB) SeedServices(t testing.TB, tenantSlug, prefix string, n int) {
	t.Helper()
	d.exec(t, `
		INSERT INTO api_services (tenant_id, name, version, status, created_at, updated_at)
		SELECT t.id, $2 || '-' || g, '1.0.0', CASE WHEN g % 2 = 0 THEN 'active' ELSE 'inactive' END,
		       now() - g * interval '1 millisecond', now()
		  FROM tenants t, generate_series(1, $3) g
		 WHERE t.slug = $1`, tenantSlug, prefix, n)
	d.exec(t, `ANALYZE api_services`)
}

// ServicePagePlan returns the query plan of the first page (20 and one) of a tenant's services.
func (d *DB) ServicePagePlan(t testing.TB, tenantSlug string) string {
	t.Helper()
	rows, err := d.sql.Query(`EXPLAIN SELECT * FROM api_services
		WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1) ORDER BY created_at DESC, id DESC LIMIT 21`, tenantSlug)
	require.NoError(t, err)
	defer rows.Close()
	var plan string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan += line + "\n"
	}
	require.NoError(t, rows.Err())
	return plan
}

// InsertRouteAs tries to insert a route of serviceID into the tenant with slug (the database
// must refuse one that crosses tenants).
func (d *DB) InsertRouteAs(ctx context.Context, tenantSlug, serviceID, name string) error {
	_, err := d.sql.ExecContext(ctx,
		`INSERT INTO routes (tenant_id, api_service_id, name) SELECT t.id, $1, $3 FROM tenants t WHERE t.slug = $2`, serviceID, tenantSlug, name)
	return err
}

// LinkServiceAs tries to link serviceID to productID as the tenant with slug (the database
// must refuse a link that crosses tenants).
func (d *DB) LinkServiceAs(ctx context.Context, tenantSlug, productID, serviceID string) error {
	_, err := d.sql.ExecContext(ctx,
		`INSERT INTO product_api_services (product_id, api_service_id, tenant_id) SELECT $1, $2, t.id FROM tenants t WHERE t.slug = $3`, productID, serviceID, tenantSlug)
	return err
}

// ---- the database itself

// Writes returns the committed transactions and written rows of the database so far.
func (d *DB) Writes(t testing.TB) (xacts, rows int64) {
	t.Helper()
	require.NoError(t, d.sql.QueryRow(`SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()`).Scan(&xacts, &rows))
	return xacts, rows
}

// RefuseAuditInserts installs a trigger that makes the audit insert of any action later passed
// to RefuseAuditOf fail, as a full disk or a bad row would.
func (d *DB) RefuseAuditInserts(t testing.TB) {
	t.Helper()
	d.exec(t, `CREATE TABLE audit_fail (action text PRIMARY KEY);
		CREATE FUNCTION audit_fail() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF EXISTS (SELECT 1 FROM audit_fail WHERE action = NEW.action) THEN
				RAISE EXCEPTION 'audit insert refused for %', NEW.action;
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER audit_fail BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION audit_fail();`)
}

// RefuseAuditOf makes the audit inserts of action fail (after RefuseAuditInserts).
func (d *DB) RefuseAuditOf(t testing.TB, action string) {
	t.Helper()
	d.exec(t, `INSERT INTO audit_fail (action) VALUES ($1)`, action)
}

// AllowAuditInserts lets every audit insert through again.
func (d *DB) AllowAuditInserts(t testing.TB) {
	t.Helper()
	d.exec(t, `DELETE FROM audit_fail`)
}

// AuditXmins lists the transaction ids of the audit rows of action on a resource.
func (d *DB) AuditXmins(t testing.TB, action, resourceID string) []string {
	t.Helper()
	var xs []string
	require.NoError(t, d.gorm.Raw(`SELECT xmin::text FROM audit_logs WHERE action = ? AND resource_id = ?`, action, resourceID).Scan(&xs).Error)
	return xs
}

// RowXmin is the transaction id that last wrote row id of table.
func (d *DB) RowXmin(t testing.TB, table, id string) string {
	t.Helper()
	var x string
	d.scalar(t, &x, `SELECT xmin::text FROM `+pgx.Identifier{table}.Sanitize()+` WHERE id = $1`, id)
	return x
}

// AuditStatusCode is the status recorded on the audit row of action on a resource.
func (d *DB) AuditStatusCode(t testing.TB, action, resourceID string) int {
	t.Helper()
	var status int
	d.scalar(t, &status, `SELECT status_code FROM audit_logs WHERE action = $1 AND resource_id = $2`, action, resourceID)
	return status
}

// AppliedTwice counts, by what the data records, changes that took effect more than once: a
// (publish, revision) with more than one `revision_frozen`, `published` or (per agent)
// `agent_result` timeline event, and publishes whose current revision is above want (for a
// test that requested each publish once: 1). The keys are those names.
func (d *DB) AppliedTwice(ctx context.Context, publishIDs []string, want int) (map[string]int, error) {
	out := map[string]int{}
	for name, q := range map[string]string{
		"revision_frozen twice for one revision": `SELECT count(*) FROM (SELECT 1 FROM publish_events WHERE type = 'revision_frozen'
			AND publish_id::text = ANY($1) GROUP BY publish_id, revision HAVING count(*) > 1) x`,
		"published twice for one revision": `SELECT count(*) FROM (SELECT 1 FROM publish_events WHERE type = 'published'
			AND publish_id::text = ANY($1) GROUP BY publish_id, revision HAVING count(*) > 1) x`,
		"agent_result twice for one (revision, agent)": `SELECT count(*) FROM (SELECT 1 FROM publish_events WHERE type = 'agent_result'
			AND publish_id::text = ANY($1) GROUP BY publish_id, revision, agent_id HAVING count(*) > 1) x`,
	} {
		var n int
		if err := d.sql.QueryRowContext(ctx, q, publishIDs).Scan(&n); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = n
	}
	var n int
	if err := d.sql.QueryRowContext(ctx, `SELECT count(*) FROM product_publishes WHERE id::text = ANY($1) AND current_revision > $2`,
		publishIDs, want).Scan(&n); err != nil {
		return nil, err
	}
	out["publishes requested once with a later revision"] = n
	return out, nil
}

// ActiveWaits samples pg_stat_activity once: for every active backend of this database other
// than the caller's, its wait event (or "running") and the start of its query. Benchmarks
// sample it while under load to see where Postgres time goes (IMPRUN_BENCH_TRACE).
func (d *DB) ActiveWaits(ctx context.Context) ([]string, error) {
	rows, err := d.sql.QueryContext(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'running') || ' ' || left(regexp_replace(query, '\s+', ' ', 'g'), 70)
		FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// ServicePageFloor is the service list's first page query (the one store.ListAPIServices
// sends: a tenant's services newest first, limit and one) written for bare pgx with explicit
// columns and no ORM: the floor BenchmarkRESTList serves beside the real handler.
func ServicePageFloor(ctx context.Context, pool *pgxpool.Pool, tenantID uuid.UUID, limit int) ([]models.APIService, error) {
	rows, err := pool.Query(ctx, `SELECT id, tenant_id, name, version, description, labels, status, created_at, updated_at
		FROM api_services WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`, tenantID, limit+1)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]models.APIService, 0, limit+1)
	for rows.Next() {
		var s models.APIService
		if err := rows.Scan(&s.ID, &s.TenantID, &s.Name, &s.Version, &s.Description, &s.Labels, &s.Status, &s.CreatedAt, &s.UpdatedAt); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Unfinish makes the stored answer of Idempotency-Key key look like a reservation whose
// process died age ago, before it answered.
func (d *DB) Unfinish(t testing.TB, key string, age time.Duration) {
	t.Helper()
	d.exec(t, `UPDATE idempotency_keys SET status_code = 0, content_type = '', response_body = NULL,
		created_at = now() - make_interval(secs => $2) WHERE key = $1`, key, age.Seconds())
}

// UnackedAgents describes the agents of a cluster with no acknowledged delivery of a command
// (a benchmark's failure report): how many there are by their row's status and their
// delivery's, and the types of their events since since, most frequent first.
func (d *DB) UnackedAgents(t testing.TB, clusterID, commandID uuid.UUID, since time.Time) []string {
	t.Helper()
	var out []string
	collect := func(q string, args ...any) { out = append(out, d.labelCounts(t, "%s: %d", q, args...)...) }
	const missing = `SELECT a.id, a.status FROM agents a WHERE a.cluster_id = $1 AND NOT EXISTS (SELECT 1 FROM agent_command_deliveries d
		WHERE d.command_id = $2 AND d.agent_id = a.id AND d.status = 'acked')`
	collect(`SELECT 'agent ' || m.status || ', delivery ' || coalesce(d.status, 'none'), count(*) FROM (`+missing+`) m
		LEFT JOIN agent_command_deliveries d ON d.command_id = $2 AND d.agent_id = m.id GROUP BY 1 ORDER BY 2 DESC`, clusterID, commandID)
	collect(`SELECT 'event ' || e.type, count(*) FROM (`+missing+`) m JOIN agent_events e ON e.agent_id = m.id AND e.created_at >= $3
		GROUP BY 1 ORDER BY 2 DESC LIMIT 10`, clusterID, commandID, since)
	return out
}

// HoldPool caps the store's pool at max connections and takes n of them until release (a
// pool busy with other work).
func (d *DB) HoldPool(t testing.TB, max, n int) (conns []*sql.Conn, release func()) {
	t.Helper()
	d.sql.SetMaxOpenConns(max)
	for range n {
		c, err := d.sql.Conn(context.Background())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	release = func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	t.Cleanup(release)
	return conns, release
}

// LockAgentRow holds the agent's row locked, as a transaction claiming or releasing it does,
// until release.
func (d *DB) LockAgentRow(t testing.TB, id string) (release func()) {
	t.Helper()
	tx, err := d.sql.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	var got string
	require.NoError(t, tx.QueryRow(`SELECT id::text FROM agents WHERE id = $1 FOR UPDATE`, id).Scan(&got))
	release = func() { _ = tx.Rollback() }
	t.Cleanup(release)
	return release
}

// DisconnectReasons counts the agents' disconnected events since since by their message, most
// frequent first (a benchmark's report of agents that dropped).
func (d *DB) DisconnectReasons(t testing.TB, since time.Time) []string {
	t.Helper()
	return d.labelCounts(t, "%q: %d", `SELECT message, count(*) FROM agent_events WHERE type = 'disconnected' AND created_at >= $1
		GROUP BY 1 ORDER BY 2 DESC LIMIT 10`, since)
}

// labelCounts formats the rows (label, count) of q with format.
func (d *DB) labelCounts(t testing.TB, format, q string, args ...any) []string {
	t.Helper()
	rows, err := d.sql.Query(q, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var label string
		var n int
		require.NoError(t, rows.Scan(&label, &n))
		out = append(out, fmt.Sprintf(format, label, n))
	}
	require.NoError(t, rows.Err())
	return out
}
