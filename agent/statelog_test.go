package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStateLogReplaysChangesInOrder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "applied.log")
	m := map[string]*AppliedPublish{}
	l, err := openStateLog(path, filepath.Join(dir, "applied.json"), m)
	require.NoError(t, err)
	for i := range 3 {
		a := &AppliedPublish{PublishID: fmt.Sprint("p", i), Revision: int32(i + 1)}
		require.NoError(t, l.put(a.PublishID, a))
		m[a.PublishID] = a
	}
	require.NoError(t, l.put("p1", &AppliedPublish{PublishID: "p1", Revision: 9}))
	require.NoError(t, l.put("p0", nil))
	l.close()

	got := map[string]*AppliedPublish{}
	_, err = openStateLog(path, filepath.Join(dir, "applied.json"), got)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.EqualValues(t, 9, got["p1"].Revision, "the later change wins")
	require.EqualValues(t, 3, got["p2"].Revision)
	require.NotContains(t, got, "p0", "a delete line removes the entry")
}

// A crash mid-append leaves a torn last line: that change is lost (it was never acknowledged),
// the rest is read, and the next append starts on a line of its own. A torn line anywhere
// else is corruption, and an error.
func TestStateLogTornTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "commands.log")
	m := map[string]journalEntry{}
	l, err := openStateLog(path, filepath.Join(dir, "commands.json"), m)
	require.NoError(t, err)
	require.NoError(t, l.put("c1", journalEntry{Seq: 1, Reply: json.RawMessage(`{}`)}))
	l.close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"k":"c2","v":{"seq":2,"re`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	got := map[string]journalEntry{}
	l, err = openStateLog(path, filepath.Join(dir, "commands.json"), got)
	require.NoError(t, err)
	require.Equal(t, []string{"c1"}, keys(got))
	require.NoError(t, l.put("c3", journalEntry{Seq: 3, Reply: json.RawMessage(`{}`)}))
	l.close()
	again := map[string]journalEntry{}
	_, err = openStateLog(path, filepath.Join(dir, "commands.json"), again)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"c1", "c3"}, keys(again))

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte("garbage\n"+string(data)), 0o600))
	_, err = openStateLog(path, filepath.Join(dir, "commands.json"), map[string]journalEntry{})
	require.ErrorContains(t, err, "line 1")
}

// The command journal is a log of hints, not fsynced: a crash of the machine may leave any of
// its lines unreadable (zeros where the page cache was not written), and each such line is
// skipped, not an error, since a lost answer only makes its command run again. The file is
// rewritten without them, so the next append starts on a clean line. A log of records (the
// applied log) still refuses the same file.
func TestStateLogHintsSkipUnreadableLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "commands.log")
	st, err := openState(dir)
	require.NoError(t, err)
	require.True(t, st.journalLog.hints, "the command journal is a log of hints")
	require.False(t, st.appliedLog.hints, "the applied log is a log of records")
	st.appliedLog.close()
	st.journalLog.close()

	entry := func(id string, seq int) string {
		return fmt.Sprintf(`{"k":%q,"v":{"seq":%d,"handled_at":"2026-12-01T00:00:00Z","reply":{}}}`, id, seq) + "\n"
	}
	content := entry("c1", 1) + strings.Repeat("\x00", 40) + "\n" + entry("c2", 2) + `{"k":"c3","v":{"se` + "\n" + entry("c4", 4)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))

	_, err = openStateLog(path, filepath.Join(dir, "commands.json"), map[string]journalEntry{})
	require.ErrorContains(t, err, "line 2", "a log of records refuses an unreadable line")

	got := map[string]journalEntry{}
	l, err := openHintLog(path, filepath.Join(dir, "commands.json"), got)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"c1", "c2", "c4"}, keys(got))
	require.NoError(t, l.put("c5", journalEntry{Seq: 5, Reply: json.RawMessage(`{}`)}))
	l.close()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotContains(t, string(data), "\x00", "the unreadable lines are rewritten away")
	again := map[string]journalEntry{}
	_, err = openStateLog(path, filepath.Join(dir, "commands.json"), again)
	require.NoError(t, err, "after the rewrite every line reads")
	require.ElementsMatch(t, []string{"c1", "c2", "c4", "c5"}, keys(again))
}

// An agent from before v0.3 kept one JSON document; it is read once and replaced by the log.
func TestStateLogReadsTheLegacyFile(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, "applied.json")
	require.NoError(t, os.WriteFile(legacy, []byte(`{"p1": {"publish_id": "p1", "revision": 4, "checksum": "abc"}}`), 0o600))
	m := map[string]*AppliedPublish{}
	l, err := openStateLog(filepath.Join(dir, "applied.log"), legacy, m)
	require.NoError(t, err)
	l.close()
	require.EqualValues(t, 4, m["p1"].Revision)
	_, err = os.Stat(legacy)
	require.ErrorIs(t, err, os.ErrNotExist, "the legacy file is gone once the log holds it")
	got := map[string]*AppliedPublish{}
	_, err = openStateLog(filepath.Join(dir, "applied.log"), legacy, got)
	require.NoError(t, err)
	require.Equal(t, "abc", got["p1"].Checksum)
}

// The file stays proportional to the map: 1,000 changes to 10 entries leave at most
// 2 x 10 + 64 lines.
func TestStateLogCompacts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "applied.log")
	m := map[string]*AppliedPublish{}
	l, err := openStateLog(path, filepath.Join(dir, "applied.json"), m)
	require.NoError(t, err)
	for i := range 1000 {
		a := &AppliedPublish{PublishID: fmt.Sprint("p", i%10), Revision: int32(i)}
		require.NoError(t, l.put(a.PublishID, a))
		m[a.PublishID] = a
		require.NoError(t, l.maybeCompact(len(m)))
	}
	l.close()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.LessOrEqual(t, strings.Count(string(data), "\n"), 2*10+64)
	got := map[string]*AppliedPublish{}
	_, err = openStateLog(path, filepath.Join(dir, "applied.json"), got)
	require.NoError(t, err)
	require.EqualValues(t, 999, got["p9"].Revision)
	require.EqualValues(t, 990, got["p0"].Revision)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A log whose file was removed under the agent (the state directory wiped while it runs) is
// written to its path again rather than into the removed file; without the directory the
// change fails, as any write of the state would.
func TestStateLogRemovedFile(t *testing.T) {
	dir, path, l := appliedLogWithP1(t)
	require.NoError(t, os.Remove(path))
	require.NoError(t, l.put("p2", &AppliedPublish{PublishID: "p2", Revision: 2}))
	requireLogKeys(t, dir, path, "p1", "p2")

	require.NoError(t, os.RemoveAll(dir))
	require.Error(t, l.put("p3", &AppliedPublish{PublishID: "p3"}))
}

// A change written but not yet in the map (its fsync under way without the caller's lock)
// survives a rewrite of the log meanwhile: the rewrite keeps it after the map's lines, and
// its sync, on the replaced file, succeeds.
func TestStateLogRewriteKeepsPendingLines(t *testing.T) {
	dir, path, l := appliedLogWithP1(t)

	id, err := l.write("p2", &AppliedPublish{PublishID: "p2", Revision: 2})
	require.NoError(t, err)
	require.NoError(t, l.compact(), "a rewrite while p2 is pending")
	require.NoError(t, l.sync())
	l.done(id)
	require.Empty(t, l.pend)

	requireLogKeys(t, dir, path, "p1", "p2")
}

// appliedLogWithP1 opens an applied log in a new directory and puts p1 in it; the log is
// closed when the test ends.
func appliedLogWithP1(t *testing.T) (dir, path string, l *stateLog) {
	dir = t.TempDir()
	path = filepath.Join(dir, "applied.log")
	m := map[string]*AppliedPublish{}
	l, err := openStateLog(path, filepath.Join(dir, "applied.json"), m)
	require.NoError(t, err)
	t.Cleanup(l.close)
	a := &AppliedPublish{PublishID: "p1", Revision: 1}
	require.NoError(t, l.put("p1", a))
	m["p1"] = a
	return dir, path, l
}

// requireLogKeys reads the applied log at path afresh and checks the publishes it holds.
func requireLogKeys(t *testing.T, dir, path string, want ...string) {
	got := map[string]*AppliedPublish{}
	_, err := openStateLog(path, filepath.Join(dir, "applied.json"), got)
	require.NoError(t, err)
	require.ElementsMatch(t, want, keys(got))
}

// put makes key = v durable (a nil v, as any(nil), deletes key) in one call: write, sync and
// done, as a caller that holds no lock of its own may.
func (l *stateLog) put(key string, v any) error {
	id, err := l.write(key, v)
	if err != nil {
		return err
	}
	err = l.sync()
	l.done(id)
	return err
}
