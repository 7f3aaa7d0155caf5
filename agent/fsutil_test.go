package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// ensurePrivateDir makes every directory it creates private, the leaf also when it existed
// with looser permissions.
func TestEnsurePrivateDirCreatesPrivateDirectories(t *testing.T) {
	base := t.TempDir()
	leaf := filepath.Join(base, "publishes", "p1")
	require.NoError(t, ensurePrivateDir(leaf))
	for _, d := range []string{filepath.Join(base, "publishes"), leaf} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.True(t, fi.IsDir())
		require.Equal(t, stateDirMode, fi.Mode().Perm(), d)
	}
	require.NoError(t, os.Chmod(leaf, 0o755))
	require.NoError(t, ensurePrivateDir(leaf))
	fi, err := os.Stat(leaf)
	require.NoError(t, err)
	require.Equal(t, stateDirMode, fi.Mode().Perm())
}
