package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/models"
)

// AgentCommandChannel is the NOTIFY channel that wakes the api replicas when a command is
// enqueued; the payload is the command id.
const AgentCommandChannel = "imprun_agent_commands"

// EnqueueCommand inserts a command into the outbox and wakes every api replica in the same
// transaction. It is idempotent on DedupeKey: a retried activity gets the first command back
// with created=false. A non-empty SupersedeKey retires older commands with the same key.
func (s *Store) EnqueueCommand(ctx context.Context, cmd *models.AgentCommand) (created bool, err error) {
	if cmd.DedupeKey == "" {
		return false, fmt.Errorf("command needs a dedupe key")
	}
	if cmd.Payload == nil {
		cmd.Payload = models.JSONMap{}
	}
	// One statement: the insert, the retirement of older commands with the same SupersedeKey
	// and the wake-up happen only when the insert took place; otherwise the row of the dedupe
	// key comes back. The sub-statements share one snapshot, so the retirement can't see (and
	// retire) the row inserted beside it.
	var rows []enqueuedCommand
	err = s.db(ctx).Raw(`WITH ins AS (
			INSERT INTO agent_commands (cluster_id, agent_id, kind, priority, dedupe_key, supersede_key, payload, trace_context)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING RETURNING *
		), retired AS (
			UPDATE agent_commands SET superseded_at = now()
			WHERE supersede_key = ? AND supersede_key <> '' AND superseded_at IS NULL AND EXISTS (SELECT 1 FROM ins)
		), woken AS (
			SELECT pg_notify(?, id::text) FROM ins
		)
		SELECT ins.*, true AS created, (SELECT count(*) FROM woken) AS woken FROM ins
		UNION ALL
		SELECT c.*, false, 0 FROM agent_commands c WHERE c.dedupe_key = ? AND NOT EXISTS (SELECT 1 FROM ins)`,
		cmd.ClusterID, cmd.AgentID, cmd.Kind, cmd.Priority, cmd.DedupeKey, cmd.SupersedeKey, cmd.Payload, cmd.TraceContext,
		cmd.SupersedeKey, AgentCommandChannel, cmd.DedupeKey).Scan(&rows).Error
	if err != nil {
		return false, err
	}
	if len(rows) == 0 {
		// The key's row was inserted by a transaction that committed after this statement's
		// snapshot was taken (the insert waited for it): it is visible to a new statement.
		return false, notFound(s.db(ctx).Take(cmd, "dedupe_key = ?", cmd.DedupeKey).Error)
	}
	*cmd = rows[0].AgentCommand
	return rows[0].Created, nil
}

// enqueuedCommand is a row of EnqueueCommand's statement.
type enqueuedCommand struct {
	models.AgentCommand
	Created bool
	Woken   int // only there to run the wake-up: a CTE that is only read runs when it is read
}

// EnqueueCommands is EnqueueCommand for many commands (a credential rollout's one command per
// cluster) in one transaction with a fixed number of statements, however many there are. Each
// command gets its row back (the first one, for a dedupe key that exists); only the commands
// created now retire older ones with their SupersedeKey (which must differ within one call)
// and wake the replicas.
func (s *Store) EnqueueCommands(ctx context.Context, cmds []*models.AgentCommand) error {
	if len(cmds) == 0 {
		return nil
	}
	n := len(cmds)
	clusters, agents, kinds, prios := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	keys, supersede, payloads, traces := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	for _, c := range cmds {
		if c.DedupeKey == "" {
			return fmt.Errorf("command needs a dedupe key")
		}
		if c.Payload == nil {
			c.Payload = models.JSONMap{}
		}
		p, err := json.Marshal(c.Payload)
		if err != nil {
			return err
		}
		agent := ""
		if c.AgentID != nil {
			agent = c.AgentID.String()
		}
		clusters, agents, kinds = append(clusters, c.ClusterID.String()), append(agents, agent), append(kinds, c.Kind)
		prios, keys = append(prios, fmt.Sprint(c.Priority)), append(keys, c.DedupeKey)
		supersede, payloads = append(supersede, c.SupersedeKey), append(payloads, string(p))
		tc, err := c.TraceContext.Value()
		if err != nil {
			return err
		}
		traces = append(traces, tc.(string))
	}
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		var created []models.AgentCommand
		if err := tx.Raw(`INSERT INTO agent_commands (cluster_id, agent_id, kind, priority, dedupe_key, supersede_key, payload, trace_context)
			SELECT v.cluster_id, nullif(v.agent_id, '')::uuid, v.kind, v.priority, v.dedupe_key, v.supersede_key, v.payload::jsonb, v.trace_context::jsonb
			FROM unnest(?::uuid[], ?::text[], ?::text[], ?::smallint[], ?::text[], ?::text[], ?::text[], ?::text[])
				AS v(cluster_id, agent_id, kind, priority, dedupe_key, supersede_key, payload, trace_context)
			ON CONFLICT (dedupe_key) DO NOTHING RETURNING *`,
			models.StringArray(clusters), models.StringArray(agents), models.StringArray(kinds), models.StringArray(prios),
			models.StringArray(keys), models.StringArray(supersede), models.StringArray(payloads), models.StringArray(traces)).Scan(&created).Error; err != nil {
			return err
		}
		rows := created
		if len(created) < n {
			rows = nil
			if err := tx.Where("dedupe_key = ANY(?::text[])", models.StringArray(keys)).Find(&rows).Error; err != nil {
				return err
			}
		}
		byKey := make(map[string]models.AgentCommand, len(rows))
		for _, r := range rows {
			byKey[r.DedupeKey] = r
		}
		for _, c := range cmds {
			r, ok := byKey[c.DedupeKey]
			if !ok {
				return fmt.Errorf("command %s vanished while being enqueued", c.DedupeKey)
			}
			*c = r
		}
		if len(created) == 0 {
			return nil
		}
		ids, retire := make([]string, 0, len(created)), make([]string, 0, len(created))
		for _, c := range created {
			ids = append(ids, c.ID.String())
			if c.SupersedeKey != "" {
				retire = append(retire, c.SupersedeKey)
			}
		}
		if len(retire) > 0 {
			if err := tx.Exec(`UPDATE agent_commands SET superseded_at = now()
				WHERE supersede_key = ANY(?::text[]) AND superseded_at IS NULL AND id <> ALL(?::uuid[])`,
				models.StringArray(retire), models.StringArray(ids)).Error; err != nil {
				return err
			}
		}
		return tx.Exec(`SELECT pg_notify(?, id::text) FROM unnest(?::uuid[]) AS id`, AgentCommandChannel, models.StringArray(ids)).Error
	})
}

// GetCommand loads one command.
func (s *Store) GetCommand(ctx context.Context, id uuid.UUID) (models.AgentCommand, error) {
	var c models.AgentCommand
	return c, notFound(s.db(ctx).Take(&c, "id = ?", id).Error)
}

// GetCommands loads the commands with the given ids (those that exist), by id.
func (s *Store) GetCommands(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]models.AgentCommand, error) {
	out := make(map[uuid.UUID]models.AgentCommand, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	var rows []models.AgentCommand
	if err := s.db(ctx).Where("id = ANY(?::uuid[])", models.StringArray(strs)).Find(&rows).Error; err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// PendingCommands lists what an agent has not acknowledged yet, revocations first, then
// oldest first.
//
// Every connect runs it, so it is one statement on the pool's pgx connection (readRows), past
// GORM's reflection: a reconnect storm is as many of these as agents.
func (s *Store) PendingCommands(ctx context.Context, clusterID, agentID uuid.UUID) ([]models.AgentCommand, error) {
	var rows []models.AgentCommand
	r := pendingCommandsRead(clusterID, agentID, &rows)
	err := s.readRows(ctx, r.query, r.args, r.each)
	return rows, err
}

// pendingCommandsRead is PendingCommands' statement, appending to rows.
func pendingCommandsRead(clusterID, agentID uuid.UUID, rows *[]models.AgentCommand) batchRead {
	return batchRead{`SELECT c.id, c.cluster_id, c.agent_id, c.kind, c.priority, c.dedupe_key, c.supersede_key,
			c.payload, c.trace_context, c.created_at, c.superseded_at
		FROM agent_commands c
		WHERE c.cluster_id = $1 AND (c.agent_id IS NULL OR c.agent_id = $2) AND c.superseded_at IS NULL
		  AND NOT EXISTS (SELECT 1 FROM agent_command_deliveries d WHERE d.command_id = c.id AND d.agent_id = $2 AND d.status = 'acked')
		ORDER BY c.priority, c.created_at, c.id`, []any{clusterID, agentID}, func(rs rowScanner) error {
		var c models.AgentCommand
		if err := rs.Scan(&c.ID, &c.ClusterID, &c.AgentID, &c.Kind, &c.Priority, &c.DedupeKey, &c.SupersedeKey,
			&c.Payload, &c.TraceContext, &c.CreatedAt, &c.SupersededAt); err != nil {
			return err
		}
		*rows = append(*rows, c)
		return nil
	}}
}

// DeliveryRecord is one state change of a delivery, written in batches by the gateway.
type DeliveryRecord struct {
	CommandID uuid.UUID
	AgentID   uuid.UUID
	Status    string // sent or acked
	At        time.Time
	// SentAt, on an acked record, is when the command was sent, when the gateway folded the
	// 'sent' record into the acknowledgement (one row write instead of two).
	SentAt       time.Time
	ResultStatus string
	Result       map[string]any
	// Kind, ClusterID and Payload, on an acked record, are its command's, which the gateway has
	// from the stream that sent it: the result is passed on with them, without reading the
	// command back (one without them is left to the sweeper). They are not written.
	Kind      string
	ClusterID uuid.UUID
	Payload   models.JSONMap
	// PassedOn, on an acked record, says there is nothing to pass its result on to: it is
	// stored with passed_on_at set, in the same statement, rather than marked in another.
	PassedOn bool
}

// objectJSON is m as a JSON object for a jsonb column, {} when nil.
func objectJSON(m map[string]any) ([]byte, error) {
	if m == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(m)
}

// WriteDeliveries stores a batch of delivery changes in one statement: the result of a command
// is stored in the same row, in the same transaction, that marks it acknowledged. A 'sent'
// never downgrades an 'acked'.
func (s *Store) WriteDeliveries(ctx context.Context, recs []DeliveryRecord) error {
	return s.writeDeliveries(ctx, deliveryUpsert, recs)
}

// writeDeliveries is WriteDeliveries with the statement that writes the arrays.
func (s *Store) writeDeliveries(ctx context.Context, statement string, recs []DeliveryRecord) error {
	if len(recs) == 0 {
		return nil
	}
	// Later records of the same (command, agent) win; one statement can't touch a row twice.
	type key struct{ c, a uuid.UUID }
	last := make(map[key]int, len(recs))
	for i, r := range recs {
		k := key{r.CommandID, r.AgentID}
		if j, ok := last[k]; ok && recs[j].Status == models.DeliveryAcked && r.Status == models.DeliverySent {
			continue
		}
		last[k] = i
	}
	// One array a column, so the statement is the same text and seven parameters whatever the
	// batch (5,000 rows of VALUES were 35,000 parameters to rewrite, parse and plan), and the
	// arrays go as pgx's binary arrays (execDirect), not text literals.
	// Rows in (command, agent) order: two statements in flight lock their common rows in the
	// same order, so they can wait for each other but not deadlock.
	order := make([]int, 0, len(last))
	for _, i := range last {
		order = append(order, i)
	}
	slices.SortFunc(order, func(i, j int) int {
		if c := bytes.Compare(recs[i].CommandID[:], recs[j].CommandID[:]); c != 0 {
			return c
		}
		return bytes.Compare(recs[i].AgentID[:], recs[j].AgentID[:])
	})
	n := len(order)
	cmds, agents := make([]uuid.UUID, 0, n), make([]uuid.UUID, 0, n)
	statuses, resStatuses, results := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	sents, ackeds := make([]*time.Time, 0, n), make([]*time.Time, 0, n) // nil is NULL
	passed := make([]bool, 0, n)
	for _, i := range order {
		r := &recs[i]
		b, err := objectJSON(r.Result)
		if err != nil {
			return err
		}
		var sent, acked *time.Time
		if r.Status == models.DeliverySent {
			sent = &r.At
		} else {
			acked = &r.At
			if !r.SentAt.IsZero() {
				sent = &r.SentAt
			}
		}
		cmds, agents, statuses = append(cmds, r.CommandID), append(agents, r.AgentID), append(statuses, r.Status)
		sents, ackeds = append(sents, sent), append(ackeds, acked)
		resStatuses, results = append(resStatuses, r.ResultStatus), append(results, string(b))
		passed = append(passed, r.PassedOn && r.Status == models.DeliveryAcked)
	}
	return s.execDirect(ctx, statement, cmds, agents, statuses, sents, ackeds, resStatuses, results, passed)
}

// deliveryUpsert writes a batch of delivery rows from arrays ($1 commands, $2 agents, $3
// statuses, $4 sent and $5 acknowledged times, $6 result statuses, $7 results, $8 passed on).
//
// The statement is the delivery rows' reference check (the table has no foreign keys: their
// triggers checked each row alone, more than half of the statement's cost): it locks the
// batch's agents and commands FOR KEY SHARE, as those checks did, and writes only the rows
// whose agent and command it locked. A row of an agent or command deleted meanwhile is left
// out; a delete that comes later waits for the locks, and its trigger (migration 00020) then
// deletes the rows written.
//
// The first acknowledgement of a delivery wins: a repeat (the agent answered again on a new
// stream) changes nothing of an acked row, its passed-on mark included.
const deliveryUpsert = `WITH ag AS (SELECT id FROM agents WHERE id = ANY($2::uuid[]) FOR KEY SHARE),
		cm AS (SELECT id FROM agent_commands WHERE id = ANY($1::uuid[]) FOR KEY SHARE)
	` + deliveryInsert + `
	WHERE v.agent_id IN (SELECT id FROM ag) AND v.command_id IN (SELECT id FROM cm)` + deliveryConflict

// deliveryInsert and deliveryConflict are deliveryUpsert without its reference check, which
// BenchmarkWriteDeliveries runs as its floor.
const (
	deliveryInsert = `INSERT INTO agent_command_deliveries AS d (command_id, agent_id, status, sent_at, acked_at, result_status, result, passed_on_at)
	SELECT v.command_id, v.agent_id, v.status, v.sent_at, v.acked_at, v.result_status, v.result::jsonb, CASE WHEN v.passed THEN now() END
	FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[], $8::bool[])
		AS v(command_id, agent_id, status, sent_at, acked_at, result_status, result, passed)`
	deliveryConflict = `
	ON CONFLICT (command_id, agent_id) DO UPDATE SET
	status = CASE WHEN d.status = 'acked' THEN 'acked' ELSE excluded.status END,
	sent_at = COALESCE(d.sent_at, excluded.sent_at),
	acked_at = CASE WHEN d.status = 'acked' THEN d.acked_at ELSE excluded.acked_at END,
	result_status = CASE WHEN d.status = 'acked' THEN d.result_status ELSE excluded.result_status END,
	result = CASE WHEN d.status = 'acked' THEN d.result ELSE excluded.result END,
	passed_on_at = CASE WHEN d.status = 'acked' THEN d.passed_on_at ELSE excluded.passed_on_at END`
)

// UnpassedResult is an acknowledged command whose result has not been passed on yet.
type UnpassedResult struct {
	CommandID    uuid.UUID
	ClusterID    uuid.UUID
	AgentID      uuid.UUID
	Kind         string
	Payload      models.JSONMap
	ResultStatus string
	Result       models.JSONMap
	AckedAt      time.Time
	// Recorded says the result's timeline event is written already (a sink recorded the
	// results of its batch at once); never read from the database.
	Recorded bool `gorm:"-"`
}

// UnpassedResults lists acknowledged results older than minAge not yet passed on.
func (s *Store) UnpassedResults(ctx context.Context, minAge time.Duration, limit int) ([]UnpassedResult, error) {
	var rows []UnpassedResult
	err := s.db(ctx).Raw(`SELECT d.command_id, c.cluster_id, d.agent_id, c.kind, c.payload, d.result_status, d.result, d.acked_at
		FROM agent_command_deliveries d JOIN agent_commands c ON c.id = d.command_id
		WHERE d.status = 'acked' AND d.passed_on_at IS NULL AND d.acked_at < ?
		ORDER BY d.acked_at LIMIT ?`, time.Now().Add(-minAge), limit).Scan(&rows).Error
	return rows, err
}

// MarkPassedOn records that a result reached its workflow (or had nobody to reach).
func (s *Store) MarkPassedOn(ctx context.Context, commandID, agentID uuid.UUID) error {
	return s.db(ctx).Exec(`UPDATE agent_command_deliveries SET passed_on_at = now() WHERE command_id = ? AND agent_id = ?`, commandID, agentID).Error
}

// Deliveries lists the per-agent delivery state of a command.
func (s *Store) Deliveries(ctx context.Context, commandID uuid.UUID) ([]models.AgentCommandDelivery, error) {
	var rows []models.AgentCommandDelivery
	err := s.db(ctx).Where("command_id = ?", commandID).Order("sent_at NULLS LAST").Find(&rows).Error
	return rows, err
}
