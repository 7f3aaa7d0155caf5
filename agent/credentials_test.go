package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func apiKeyCredential(id string, version int64, prefix, secret string, grants ...Grant) Credential {
	return Credential{ID: id, Version: version, Type: CredentialAPIKey, KeyPrefix: prefix, SecretHash: sha(secret), Grants: grants}
}

func TestCredentialStoreVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := OpenCredentialStore(dir)
	require.NoError(t, err)
	grant := Grant{PublishID: "pub-1", PlanID: "gold"}

	require.NoError(t, s.Upsert(apiKeyCredential("c1", 2, "imp_aaaa1111", "s2", grant)))
	// Same or older versions are stale, whatever they say.
	err = s.Upsert(apiKeyCredential("c1", 2, "imp_aaaa1111", "other", grant))
	assert.True(t, errors.Is(err, ErrStaleVersion))
	err = s.Upsert(apiKeyCredential("c1", 1, "imp_aaaa1111", "s1", grant))
	assert.True(t, errors.Is(err, ErrStaleVersion))
	c, ok := s.Get("c1")
	require.True(t, ok)
	assert.Equal(t, sha("s2"), c.SecretHash)

	// A newer upsert replaces it.
	require.NoError(t, s.Upsert(apiKeyCredential("c1", 3, "imp_aaaa1111", "s3", grant)))
	assert.Equal(t, 1, s.ActiveCount(time.Now()))

	// Revoke at an older version is stale; at the current or a newer version it revokes.
	assert.True(t, errors.Is(s.Revoke("c1", 2, "late"), ErrStaleVersion))
	require.NoError(t, s.Revoke("c1", 4, "rotated"))
	assert.True(t, errors.Is(s.Revoke("c1", 4, "again"), ErrStaleVersion), "a redelivered revoke is stale")
	c, _ = s.Get("c1")
	assert.True(t, c.Revoked)
	assert.Equal(t, "rotated", c.RevokedReason)
	assert.Equal(t, 0, s.ActiveCount(time.Now()))
	assert.Empty(t, s.ForPublish("pub-1", time.Now()))

	// A revoke of an unknown credential leaves a tombstone that beats the late upsert.
	require.NoError(t, s.Revoke("c2", 5, "cancelled"))
	assert.True(t, errors.Is(s.Upsert(apiKeyCredential("c2", 4, "imp_bbbb2222", "x", grant)), ErrStaleVersion))

	// Everything survives a reload, and the file is private.
	s2, err := OpenCredentialStore(dir)
	require.NoError(t, err)
	c, ok = s2.Get("c1")
	require.True(t, ok)
	assert.Equal(t, int64(4), c.Version)
	assert.True(t, c.Revoked)
	fi, err := os.Stat(filepath.Join(dir, credentialsFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	data, err := os.ReadFile(filepath.Join(dir, credentialsFile))
	require.NoError(t, err)
	assert.NotContains(t, string(data), `"s3"`, "only hashes are stored")
}

func TestCredentialStoreValidation(t *testing.T) {
	t.Parallel()
	s, err := OpenCredentialStore(t.TempDir())
	require.NoError(t, err)
	tests := []struct {
		name    string
		c       Credential
		wantErr string
	}{
		{"no id", Credential{Type: CredentialAPIKey, KeyPrefix: "imp_a", SecretHash: sha("x")}, "credential_id is empty"},
		{"bad type", Credential{ID: "c", Type: "password", KeyPrefix: "imp_a", SecretHash: sha("x")}, "unsupported type"},
		{"no prefix", Credential{ID: "c", Type: CredentialAPIKey, SecretHash: sha("x")}, "key_prefix is empty"},
		{"dot in prefix", Credential{ID: "c", Type: CredentialAPIKey, KeyPrefix: "imp_a.b", SecretHash: sha("x")}, "must not contain"},
		{"hash not sha256", Credential{ID: "c", Type: CredentialAPIKey, KeyPrefix: "imp_a", SecretHash: "abcd"}, "not a hex SHA-256"},
		{"plain secret", Credential{ID: "c", Type: CredentialAPIKey, KeyPrefix: "imp_a", SecretHash: strings.Repeat("z", 64)}, "not a hex SHA-256"},
	}
	for _, tc := range tests {
		require.ErrorContains(t, s.Upsert(tc.c), tc.wantErr, tc.name)
	}
	// Upper-case hashes are normalised, and OAuth client ids may contain dots.
	require.NoError(t, s.Upsert(Credential{ID: "o", Version: 1, Type: CredentialOAuthClient, KeyPrefix: "client.example", SecretHash: strings.ToUpper(sha("x"))}))
	c, _ := s.Get("o")
	assert.Equal(t, sha("x"), c.SecretHash)
}
