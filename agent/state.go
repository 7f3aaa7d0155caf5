package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

const (
	appliedLogFile  = "applied.log"
	commandsLogFile = "commands.log"
	publishesDir    = "publishes"
	// The one-document files of agents before v0.3, read once and replaced by the logs.
	appliedFile  = "applied.json"
	commandsFile = "commands.json"
)

// maxJournal bounds the command journal. The server redelivers only commands an agent has not
// answered, and it stops once an answer is stored, so only recent ids can come back; older
// entries are dropped oldest first, journalSlack at a time (one rewrite of the log each).
const (
	maxJournal   = 2048
	journalSlack = 256
)

// AppliedPublish is what the agent has rendered for one publish.
type AppliedPublish struct {
	PublishID    string `json:"publish_id"`
	Revision     int32  `json:"revision"`
	Checksum     string `json:"checksum"`
	GatewayClass string `json:"gateway_class"`
	File         string `json:"file"`
	// FileSHA256 is the SHA-256 of File as rendered (lowercase hex), which checkRendered
	// checks after a restart; empty in the records of agents before v0.4.
	FileSHA256 string             `json:"file_sha256,omitempty"`
	Resources  []RenderedResource `json:"resources"`
	AppliedAt  time.Time          `json:"applied_at"`
}

// journalEntry is the answer the agent gave to a command, kept so that a redelivered command
// gets the very same answer instead of being executed again.
type journalEntry struct {
	Seq       int64           `json:"seq"`
	HandledAt time.Time       `json:"handled_at"`
	Reply     json.RawMessage `json:"reply"` // protojson of the AgentMessage sent
}

// state is the agent's persisted deploy state: applied publishes and the command journal.
// Deploys of different publishes run concurrently (deployRunner), and the heartbeat goroutine
// reads applied revisions meanwhile: the lock covers every read and write.
type state struct {
	dir string

	mu         sync.Mutex
	applied    map[string]*AppliedPublish
	journal    map[string]journalEntry
	appliedLog *stateLog // applied, one change a line
	journalLog *stateLog // journal, one change a line
	seq        int64
}

func openState(dir string) (*state, error) {
	st := &state{dir: dir, applied: map[string]*AppliedPublish{}, journal: map[string]journalEntry{}}
	var err error
	if st.appliedLog, err = openStateLog(filepath.Join(dir, appliedLogFile), filepath.Join(dir, appliedFile), st.applied); err != nil {
		return nil, err
	}
	if st.journalLog, err = openHintLog(filepath.Join(dir, commandsLogFile), filepath.Join(dir, commandsFile), st.journal); err != nil {
		st.appliedLog.close()
		return nil, err
	}
	for _, e := range st.journal {
		st.seq = max(st.seq, e.Seq)
	}
	return st, nil
}

func readJSON(path string, into any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeFileAtomic(path, append(data, '\n'), stateFileMode)
}

// reply returns the answer recorded for a command id.
func (st *state) reply(commandID string) (*agentv1.AgentMessage, bool) {
	st.mu.Lock()
	e, ok := st.journal[commandID]
	st.mu.Unlock()
	if !ok {
		return nil, false
	}
	var msg agentv1.AgentMessage
	if err := protojson.Unmarshal(e.Reply, &msg); err != nil {
		// A journal entry we cannot read is as good as none: the command runs again, which
		// every handler tolerates.
		return nil, false
	}
	return &msg, true
}

// record persists the answer to a command before it is sent.
func (st *state) record(commandID string, reply *agentv1.AgentMessage) error {
	data, err := protojson.Marshal(reply)
	if err != nil {
		return fmt.Errorf("encode reply: %w", err)
	}
	var e journalEntry
	return st.persist(st.journalLog, commandID, func() any {
		st.seq++
		e = journalEntry{Seq: st.seq, HandledAt: time.Now().UTC(), Reply: data}
		return e
	}, func() {
		st.journal[commandID] = e
		st.trimJournal()
	})
}

// trimJournal drops the oldest answers past maxJournal+journalSlack; the caller holds st.mu.
func (st *state) trimJournal() {
	if len(st.journal) > maxJournal+journalSlack {
		type kv struct {
			id  string
			seq int64
		}
		all := make([]kv, 0, len(st.journal))
		for id, e := range st.journal {
			all = append(all, kv{id, e.Seq})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
		for _, e := range all[:len(all)-maxJournal] {
			delete(st.journal, e.id)
		}
		// The dropped answers go with the rewrite; if it fails they stay in the file, and
		// are dropped again when it is next read.
		_ = st.journalLog.compact()
		return
	}
	_ = st.journalLog.maybeCompact(len(st.journal))
}

// appliedRevisions lists the applied publishes for ConnectRequest and Heartbeat.
func (st *state) appliedRevisions() []*agentv1.AppliedRevision {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*agentv1.AppliedRevision, 0, len(st.applied))
	for _, a := range st.applied {
		out = append(out, &agentv1.AppliedRevision{PublishId: a.PublishID, Revision: a.Revision, Checksum: a.Checksum})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PublishId < out[j].PublishId })
	return out
}

// appliedPublish returns a copy of what is applied for a publish.
func (st *state) appliedPublish(publishID string) (AppliedPublish, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	a, ok := st.applied[publishID]
	if !ok {
		return AppliedPublish{}, false
	}
	return *a, true
}

// allApplied returns copies of every applied publish.
func (st *state) allApplied() []AppliedPublish {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]AppliedPublish, 0, len(st.applied))
	for _, a := range st.applied {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PublishID < out[j].PublishID })
	return out
}

// setApplied records a publish as applied (a nil value removes it) and persists the change.
func (st *state) setApplied(publishID string, a *AppliedPublish) error {
	var v any // a nil *AppliedPublish would not be a nil any
	if a != nil {
		v = a
	}
	// A publish's own deploys run one at a time, so no other change of this key is pending
	// meanwhile.
	return st.persist(st.appliedLog, publishID, func() any { return v }, func() {
		if a == nil {
			delete(st.applied, publishID)
		} else {
			st.applied[publishID] = a
		}
		_ = st.appliedLog.maybeCompact(len(st.applied)) // a failed rewrite leaves a correct log
	})
}

// persist makes key = value() durable in l and then, if it is, calls apply to change the map
// (in a log of hints, the change is written and applied at once, without an fsync):
// value, the append and apply run under st.mu, the fsync without it (heartbeats and other
// deploys need the lock meanwhile) and shared with concurrent changes'. Until then the
// change is pending in l, and it leaves that state and enters the map in one hold of the
// lock, so a rewrite of the log meanwhile never loses it.
func (st *state) persist(l *stateLog, key string, value func() any, apply func()) error {
	if l.hints {
		// Not fsynced: the change is in the file, and the map, as soon as it is written.
		st.mu.Lock()
		defer st.mu.Unlock()
		id, err := l.write(key, value())
		if err != nil {
			return err
		}
		l.done(id)
		apply()
		return nil
	}
	st.mu.Lock()
	id, err := l.write(key, value())
	st.mu.Unlock()
	if err != nil {
		return err
	}
	err = l.sync()
	st.mu.Lock()
	defer st.mu.Unlock()
	l.done(id)
	if err != nil {
		return err
	}
	apply()
	return nil
}

// publishDir is where a publish's rendered files live.
func (st *state) publishDir(publishID string) string {
	return filepath.Join(st.dir, publishesDir, publishID)
}
