package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/agent"
)

func TestVerifySubcommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store, err := agent.OpenCredentialStore(dir)
	require.NoError(t, err)
	sum := sha256.Sum256([]byte("s3cret"))
	require.NoError(t, store.Upsert(agent.Credential{
		ID: "cred-1", Version: 1, Type: agent.CredentialAPIKey, KeyPrefix: "imp_ab12cd34",
		SecretHash: hex.EncodeToString(sum[:]), Grants: []agent.Grant{{PublishID: "pub-1", PlanID: "gold"}},
	}))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"allowed", []string{"verify", "--state-dir", dir, "--publish", "pub-1", "--key", "imp_ab12cd34.s3cret"}, exitOK, "allowed credential=cred-1 plan=gold"},
		{"wrong secret", []string{"verify", "--state-dir", dir, "--publish", "pub-1", "--key", "imp_ab12cd34.nope"}, exitFailure, "denied reason=secret_mismatch"},
		{"other publish", []string{"verify", "--state-dir", dir, "--publish", "pub-2", "--key", "imp_ab12cd34.s3cret"}, exitFailure, "denied reason=no_grant_for_publish credential=cred-1"},
		{"missing flags", []string{"verify", "--state-dir", dir}, exitUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			code := realMain(context.Background(), tc.args, &out, &errOut)
			assert.Equal(t, tc.wantCode, code, errOut.String())
			assert.Contains(t, out.String(), tc.wantOut)
		})
	}
}

func TestTransportRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, server, api string
		insecure          bool
		wantErr           string
	}{
		{"tls default", "gw.example.com:443", "https://api.example.com", false, ""},
		{"plaintext api without --insecure", "gw.example.com:443", "http://api.example.com", false, "must be https"},
		{"insecure loopback", "127.0.0.1:9090", "http://localhost:8080", true, ""},
		{"insecure loopback dns target", "dns:///localhost:9090", "http://[::1]:8080", true, ""},
		{"insecure remote server", "10.1.2.3:9090", "http://127.0.0.1:8080", true, "loopback --server"},
		{"insecure remote api", "127.0.0.1:9090", "http://10.1.2.3:8080", true, "loopback --api"},
	}
	for _, tc := range tests {
		_, _, err := transport(tc.server, tc.api, "", tc.insecure)
		if tc.wantErr == "" {
			assert.NoError(t, err, tc.name)
		} else {
			assert.ErrorContains(t, err, tc.wantErr, tc.name)
		}
	}
}

func TestRunRequiresRegistrationOrIdentity(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	code := realMain(context.Background(), []string{"run", "--server", "127.0.0.1:1", "--api", "http://127.0.0.1:1", "--insecure", "--state-dir", t.TempDir()}, &out, &errOut)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errOut.String(), "not registered")
}
