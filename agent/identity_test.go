package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIdentityPersistence(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")

	got, err := LoadIdentity(dir)
	require.NoError(t, err)
	assert.Nil(t, got, "no identity before registration")

	want := &Identity{
		AgentID: "agent-1", ClusterID: "cluster-1", ClusterName: "kr-central",
		AgentJWT: "jwt-1", JWTExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), RefreshSecret: "refresh-1",
	}
	require.NoError(t, SaveIdentity(dir, want))

	got, err = LoadIdentity(dir)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// The identity holds secrets: private directory, private file, no temp files left behind.
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	fi, err := os.Stat(filepath.Join(dir, identityFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1)

	// Overwriting replaces the content whole.
	want.AgentJWT = "jwt-2"
	require.NoError(t, SaveIdentity(dir, want))
	got, err = LoadIdentity(dir)
	require.NoError(t, err)
	assert.Equal(t, "jwt-2", got.AgentJWT)

	require.NoError(t, DeleteIdentity(dir))
	require.NoError(t, DeleteIdentity(dir), "deleting twice is fine")
	got, err = LoadIdentity(dir)
	require.NoError(t, err)
	assert.Nil(t, got)
}

func TestIdentityCorruptFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, identityFile), []byte("{"), 0o600))
	_, err := LoadIdentity(dir)
	require.ErrorContains(t, err, "decode identity")
}

func TestIdentityJWTUsable(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		id   *Identity
		want bool
	}{
		{"nil", nil, false},
		{"no jwt", &Identity{}, false},
		{"no expiry", &Identity{AgentJWT: "j"}, true},
		{"valid", &Identity{AgentJWT: "j", JWTExpiresAt: now.Add(time.Hour)}, true},
		{"about to expire", &Identity{AgentJWT: "j", JWTExpiresAt: now.Add(10 * time.Second)}, false},
		{"expired", &Identity{AgentJWT: "j", JWTExpiresAt: now.Add(-time.Hour)}, false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tc.id.jwtUsable(now), tc.name)
	}
}
