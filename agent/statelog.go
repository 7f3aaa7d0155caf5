package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"syscall"
)

// stateLog persists a map as an append-only file of JSON lines, one change per line: a put
// ({"k": key, "v": value}) or a delete ({"k": key, "d": true}). A change costs one short
// append and an fsync (none in a log of hints) whatever the size of the map; before, every
// deploy and every command answer rewrote a whole file (an agent serving 1,000 publishes wrote
// its whole applied set, and up to 2,048 command answers, for each one). When the file holds
// many more lines than the map has entries it is rewritten (compacted) atomically, so its size
// stays proportional to the map. A line torn by a crash can only be the last one: it is ignored
// when read, which loses only that change, never acknowledged (an applied revision is recorded
// before it is reported). In a log of hints, which is not fsynced, a crash of the machine may
// leave any line unreadable, and each is skipped (stateLog.hints).
//
// A change is written in three steps so that its fsync can run without the caller's lock
// (write under it, sync without it, done under it again) and be shared with concurrent
// changes (groupSync). The caller serialises every call but sync, and changes its map only
// after sync succeeded; until done, the line is pending and a rewrite keeps it after the
// map's lines.
type stateLog struct {
	path  string
	f     atomic.Pointer[logFile] // opened for appending
	lines int                     // lines in the file
	pend  []pendingLine           // written, not yet in the map, oldest first
	next  uint64                  // id of the next pending line
	// dump encodes every entry of the map the log keeps, one line each.
	dump func() (data []byte, entries int, err error)
	// hints marks a log whose entries may be lost without harm (the command journal: an
	// answer that is gone makes the command run again, which every handler tolerates). Its
	// changes are not fsynced (a crash of the agent loses none of them, a crash of the
	// machine may), and a line that does not decode, wherever it is, is skipped.
	hints bool
}

// logFile is the open file of a stateLog; replaced says a rewrite took its place (and made
// every line written to it durable in the new file), so a sync that finds it closed is done.
type logFile struct {
	f        *os.File
	replaced atomic.Bool
}

type pendingLine struct {
	id   uint64
	line []byte
}

type logLine struct {
	K string          `json:"k"`
	V json.RawMessage `json:"v,omitempty"`
	D bool            `json:"d,omitempty"`
}

// openStateLog reads the map kept in path into m, which the caller then changes only
// together with write, sync and done. When path does not exist and legacy does (the
// one-JSON-document file of agents before v0.3), legacy is read instead, the log written from
// it and legacy removed.
func openStateLog[V any](path, legacy string, m map[string]V) (*stateLog, error) {
	return openLog(path, legacy, m, false)
}

// openHintLog is openStateLog for a log of hints (stateLog.hints).
func openHintLog[V any](path, legacy string, m map[string]V) (*stateLog, error) {
	return openLog(path, legacy, m, true)
}

func openLog[V any](path, legacy string, m map[string]V, hints bool) (*stateLog, error) {
	l := &stateLog{path: path, hints: hints, dump: func() ([]byte, int, error) { return encodeLines(m) }}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := readJSON(legacy, &m); err != nil {
			return nil, err
		}
		if err := l.compact(); err != nil {
			return nil, err
		}
		if err := os.Remove(legacy); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove %s: %w", legacy, err)
		}
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	rewrite, err := l.replay(data, func(ll logLine) error { return applyLine(m, ll) })
	if err != nil {
		return nil, err
	}
	// A legacy file left by a crash between writing the log and removing it is stale.
	_ = os.Remove(legacy)
	if rewrite {
		return l, l.compact() // the next append starts on a line of its own
	}
	return l, l.open()
}

// replay applies the lines of data in order. A last line cut short by a crash is skipped; any
// other line that does not decode is an error, but in a log of hints, where it is skipped too.
// rewrite says the file must be rewritten before it is appended to: it does not end in a
// newline, or it holds lines that were skipped.
func (l *stateLog) replay(data []byte, apply func(logLine) error) (rewrite bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 64<<20)
	complete := len(data) > 0 && data[len(data)-1] == '\n'
	var pending []byte // the previous line: whether it is the last is known one line later
	n := 0
	skipped := false
	step := func(line []byte, last bool) error {
		var ll logLine
		err := json.Unmarshal(line, &ll)
		if err == nil {
			err = apply(ll)
		}
		if err != nil {
			if last && !complete {
				return nil // torn by a crash mid-append: that change was never acknowledged
			}
			if l.hints {
				skipped = true // a hint lost by a crash of the machine (not fsynced)
				return nil
			}
			return fmt.Errorf("decode %s line %d: %w", l.path, n+1, err)
		}
		n++
		return nil
	}
	for sc.Scan() {
		if pending != nil {
			if err := step(pending, false); err != nil {
				return false, err
			}
		}
		pending = append(pending[:0:0], sc.Bytes()...)
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read %s: %w", l.path, err)
	}
	if pending != nil {
		if err := step(pending, true); err != nil {
			return false, err
		}
	}
	l.lines = n
	// A last line without its newline, torn or whole, would have the next append glued to it.
	return len(data) > 0 && !complete || skipped, nil
}

func applyLine[V any](m map[string]V, ll logLine) error {
	if ll.K == "" {
		return errors.New("a line without a key")
	}
	if ll.D {
		delete(m, ll.K)
		return nil
	}
	var v V
	if err := json.Unmarshal(ll.V, &v); err != nil {
		return err
	}
	m[ll.K] = v
	return nil
}

// encodeLines is every entry of m as one line each, sorted by key (a reproducible file).
func encodeLines[V any](m map[string]V) ([]byte, int, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for _, k := range keys {
		raw, err := json.Marshal(m[k])
		if err != nil {
			return nil, 0, err
		}
		line, err := json.Marshal(logLine{K: k, V: raw})
		if err != nil {
			return nil, 0, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), len(keys), nil
}

func (l *stateLog) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, stateFileMode)
	if err != nil {
		return fmt.Errorf("open %s: %w", l.path, err)
	}
	l.f.Store(&logFile{f: f})
	return nil
}

// write appends the line of key = v (a nil v, as any(nil), deletes key) and returns its id
// for done; the line is durable only once sync returned nil.
func (l *stateLog) write(key string, v any) (uint64, error) {
	ll := logLine{K: key, D: v == nil}
	if v != nil {
		raw, err := json.Marshal(v)
		if err != nil {
			return 0, fmt.Errorf("encode %s: %w", l.path, err)
		}
		ll.V = raw
	}
	line, err := json.Marshal(ll)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", l.path, err)
	}
	line = append(line, '\n')
	// A file removed under the agent (its state directory wiped) would take appends and
	// keep nothing: write the map to path again first, or fail as a rewrite would have.
	lf := l.f.Load()
	if lf == nil {
		return 0, fmt.Errorf("write %s: %w", l.path, os.ErrClosed)
	}
	f := lf.f
	if fi, err := f.Stat(); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 0 {
			if err := l.compact(); err != nil {
				return 0, err
			}
			f = l.f.Load().f
		}
	}
	if _, err := f.Write(line); err != nil {
		return 0, fmt.Errorf("write %s: %w", l.path, err)
	}
	l.lines++
	l.next++
	l.pend = append(l.pend, pendingLine{id: l.next, line: line})
	return l.next, nil
}

// sync makes every line written so far durable. It is the one call that needs no lock: the
// fsync is shared with concurrent callers' (groupSync), and a rewrite meanwhile (which
// keeps the pending lines) makes it moot.
func (l *stateLog) sync() error {
	err := groupSync(l.path, func() error {
		lf := l.f.Load()
		if lf == nil {
			return os.ErrClosed
		}
		if err := lf.f.Sync(); err != nil && !lf.replaced.Load() {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

// done ends the pending state of a line write returned: the caller has changed its map (or
// given the change up, when sync failed).
func (l *stateLog) done(id uint64) {
	for i, p := range l.pend {
		if p.id == id {
			l.pend = append(l.pend[:i], l.pend[i+1:]...)
			return
		}
	}
}

// maybeCompact rewrites the file once it holds more than twice as many lines as the map has
// entries (plus a margin, so that a small map is not rewritten on every change): a rewrite
// costs O(entries) and comes once per O(entries) changes. A failed rewrite leaves the log as
// it was, still correct, and is tried again on a later change.
func (l *stateLog) maybeCompact(entries int) error {
	if l.lines <= 2*entries+64 {
		return nil
	}
	return l.compact()
}

// compact writes the map's entries atomically, one line each, then the pending lines, and
// reopens the file for appending.
func (l *stateLog) compact() error {
	data, n, err := l.dump()
	if err != nil {
		return fmt.Errorf("encode %s: %w", l.path, err)
	}
	for _, p := range l.pend {
		data = append(data, p.line...)
	}
	if err := writeFileAtomic(l.path, data, stateFileMode); err != nil {
		return err
	}
	if old := l.f.Load(); old != nil {
		old.replaced.Store(true)
		_ = old.f.Close() // the old file, replaced by the rename
	}
	l.lines = n + len(l.pend)
	return l.open()
}

func (l *stateLog) close() {
	if l != nil {
		if lf := l.f.Swap(nil); lf != nil {
			_ = lf.f.Close()
		}
	}
}
