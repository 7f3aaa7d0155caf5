package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A publish's rendered files are written without fsyncs; after a crash the agent checks them
// against the applied log before it applies anything. The current pointer (stale, torn or
// missing) names the applied file again and the credentials file is rendered again from the
// credential set; a revision file that is missing or not what was rendered is reported as
// drift, and nothing of it is rewritten.
func TestCheckRendered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := openState(dir)
	require.NoError(t, err)
	creds, err := OpenCredentialStore(dir)
	require.NoError(t, err)
	a := &Agent{st: st, creds: creds, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	write := func(path, data string) {
		t.Helper()
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
		require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
	}
	sum := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	applied := func(pub string) {
		t.Helper()
		require.NoError(t, st.setApplied(pub, &AppliedPublish{PublishID: pub, Revision: 2, File: "rev-2.yaml", FileSHA256: sum("two"),
			GatewayClass: GatewayClassEnvoy, AppliedAt: time.Now()}))
	}
	pointers := map[string]string{
		"a0000000-0000-0000-0000-000000000001": "rev-1.yaml\n", // stale: the crash kept the old one
		"a0000000-0000-0000-0000-000000000002": "",             // torn
		"a0000000-0000-0000-0000-000000000003": "-",            // missing
		"a0000000-0000-0000-0000-000000000004": "rev-2.yaml\n", // right
	}
	for pub, cur := range pointers {
		p := st.publishDir(pub)
		write(filepath.Join(p, "rev-1.yaml"), "one")
		write(filepath.Join(p, "rev-2.yaml"), "two")
		if cur != "-" {
			write(filepath.Join(p, currentFile), cur)
		}
		applied(pub)
	}
	// The credentials file of the right one is torn: rendered again.
	r, err := RendererFor(GatewayClassEnvoy, a.cfg.Render)
	require.NoError(t, err)
	credsOf := func(pub string) fileContent {
		t.Helper()
		c, err := a.credentialsFile(pub, r)
		require.NoError(t, err)
		require.NotEmpty(t, c.data)
		return c
	}
	right := "a0000000-0000-0000-0000-000000000004"
	torncreds := credsOf(right)
	write(filepath.Join(st.publishDir(right), torncreds.name), string(torncreds.data[:len(torncreds.data)/2]))

	gone := "a0000000-0000-0000-0000-000000000005" // the revision file never reached the disk
	write(filepath.Join(st.publishDir(gone), currentFile), "rev-1.yaml\n")
	applied(gone)
	torn := "a0000000-0000-0000-0000-000000000006" // it did, but not all of it
	write(filepath.Join(st.publishDir(torn), "rev-2.yaml"), "tw")
	write(filepath.Join(st.publishDir(torn), currentFile), "rev-1.yaml\n")
	applied(torn)
	legacy := "a0000000-0000-0000-0000-000000000007" // recorded before the checksum: present is enough
	write(filepath.Join(st.publishDir(legacy), "rev-2.yaml"), "whatever it was")
	require.NoError(t, st.setApplied(legacy, &AppliedPublish{PublishID: legacy, Revision: 2, File: "rev-2.yaml", GatewayClass: GatewayClassEnvoy}))

	require.NoError(t, a.checkRendered())
	for pub := range pointers {
		got, err := os.ReadFile(filepath.Join(st.publishDir(pub), currentFile))
		require.NoError(t, err, pub)
		assert.Equal(t, "rev-2.yaml\n", string(got), pub)
		want := credsOf(pub)
		got, err = os.ReadFile(filepath.Join(st.publishDir(pub), want.name))
		require.NoError(t, err, pub)
		assert.Equal(t, string(want.data), string(got), pub)
	}
	for _, pub := range []string{gone, torn} {
		got, err := os.ReadFile(filepath.Join(st.publishDir(pub), currentFile))
		require.NoError(t, err)
		assert.Equal(t, "rev-1.yaml\n", string(got), "no pointer to a file that is not what was applied")
	}

	revs := a.appliedState()
	drift := map[string]string{}
	for _, r := range revs {
		drift[r.GetPublishId()] = r.GetDrift()
	}
	assert.Equal(t, "rendered file rev-2.yaml is missing", drift[gone])
	assert.Equal(t, "rendered file rev-2.yaml is not what was rendered", drift[torn])
	for pub := range pointers {
		assert.Empty(t, drift[pub], pub)
	}
	assert.Empty(t, drift[legacy])
	assert.Len(t, revs, 7, "a drifted publish is still reported, with its drift")

	// Applying or withdrawing a publish again ends its drift.
	a.drift.clear(gone)
	for _, r := range a.appliedState() {
		if r.GetPublishId() == gone {
			assert.Empty(t, r.GetDrift())
		}
	}
}

// Writes whose files are all derived leave the directory unsynced but still replace each file
// whole; a durable write in the same directory is unaffected.
func TestWriteFilesAtomicDerived(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, writeFilesAtomic(dir, stateFileMode, fileContent{name: "a", data: []byte("1"), derived: true},
		fileContent{name: "b", data: []byte("2"), derived: true}))
	require.NoError(t, writeFilesAtomic(dir, stateFileMode, fileContent{name: "a", data: []byte("3"), derived: true}))
	got, err := os.ReadFile(filepath.Join(dir, "a"))
	require.NoError(t, err)
	assert.Equal(t, "3", string(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "no temp file left behind")
	fi, err := os.Stat(filepath.Join(dir, "b"))
	require.NoError(t, err)
	assert.Equal(t, stateFileMode, fi.Mode().Perm())

	sub := filepath.Join(dir, "x", "y")
	require.NoError(t, ensureDir(sub, false))
	fi, err = os.Stat(sub)
	require.NoError(t, err)
	assert.Equal(t, stateDirMode, fi.Mode().Perm())
}
