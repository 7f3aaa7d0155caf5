package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The current pointer of a publish is written without an fsync of its own; after a crash the
// agent rewrites it from the applied log before it applies anything: stale, torn or missing,
// it names the applied file again. A pointer whose applied file is gone is left for the
// redelivered command.
func TestRepairPointers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := openState(dir)
	require.NoError(t, err)
	a := &Agent{st: st, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	write := func(path, data string) {
		t.Helper()
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
		require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
	}
	cases := map[string]string{
		"a0000000-0000-0000-0000-000000000001": "rev-1.yaml\n", // stale: the crash kept the old one
		"a0000000-0000-0000-0000-000000000002": "",             // torn
		"a0000000-0000-0000-0000-000000000003": "-",            // missing
		"a0000000-0000-0000-0000-000000000004": "rev-2.yaml\n", // right
	}
	for pub, cur := range cases {
		p := st.publishDir(pub)
		write(filepath.Join(p, "rev-1.yaml"), "one")
		write(filepath.Join(p, "rev-2.yaml"), "two")
		if cur != "-" {
			write(filepath.Join(p, currentFile), cur)
		}
		require.NoError(t, st.setApplied(pub, &AppliedPublish{PublishID: pub, Revision: 2, File: "rev-2.yaml"}))
	}
	gone := "a0000000-0000-0000-0000-000000000005"
	write(filepath.Join(st.publishDir(gone), currentFile), "rev-1.yaml\n")
	require.NoError(t, st.setApplied(gone, &AppliedPublish{PublishID: gone, Revision: 2, File: "rev-2.yaml"}))

	require.NoError(t, a.repairPointers())
	for pub := range cases {
		got, err := os.ReadFile(filepath.Join(st.publishDir(pub), currentFile))
		require.NoError(t, err, pub)
		require.Equal(t, "rev-2.yaml\n", string(got), pub)
	}
	got, err := os.ReadFile(filepath.Join(st.publishDir(gone), currentFile))
	require.NoError(t, err)
	require.Equal(t, "rev-1.yaml\n", string(got), "no pointer to a file that is not there")
}
