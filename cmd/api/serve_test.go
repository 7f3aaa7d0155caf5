package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/config"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

func testConfig(t *testing.T, dbURL string) *config.Config {
	t.Helper()
	t.Setenv("IMPRUN_DATABASE_URL", dbURL)
	t.Setenv("IMPRUN_TEMPORAL_HOST_PORT", testharness.Temporal(t).HostPort())
	t.Setenv("IMPRUN_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("IMPRUN_GRPC_ADDR", "127.0.0.1:0")
	t.Setenv("IMPRUN_DATABASE_CONNECT_RETRY", "2s")
	t.Setenv("IMPRUN_AGENT_JWT_SECRET", "test-secret-test-secret-test-secret-0123")
	cfg, err := config.Load("")
	require.NoError(t, err)
	return cfg
}

// The api serves, reports ready with real Postgres and Temporal, and returns cleanly on SIGTERM
// (here: its context ending).
func TestServeLifecycle(t *testing.T) {
	url := testharness.Postgres(t).NewDatabase(t)
	storetest.Open(t, url) // migrated
	cfg := testConfig(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-errc:
		t.Fatalf("serve failed: %v", err)
	}
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond)

	// /metrics carries the Temporal client's own series beside the HTTP ones.
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), "temporal_request{")
	require.Contains(t, string(body), "imprun_http_requests_total")

	cancel()
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
}

func TestServeRefusesOutdatedSchema(t *testing.T) {
	url := testharness.Postgres(t).NewDatabase(t)
	cfg := testConfig(t, url)
	var logs bytes.Buffer
	err := serve(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.ErrorContains(t, err, "api migrate up")
}

func TestServeGivesUpOnUnreachablePostgres(t *testing.T) {
	cfg := testConfig(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable")
	var logs bytes.Buffer
	err := serve(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.ErrorContains(t, err, "postgres unreachable")
	require.Contains(t, logs.String(), "retrying", "each failed attempt is logged")
}

// The migrate command works end to end as an operator runs it.
func TestMigrateCommand(t *testing.T) {
	url := testharness.Postgres(t).NewDatabase(t)
	testConfig(t, url)
	run := func(args ...string) string {
		cmd := rootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		require.NoError(t, cmd.Execute(), "api %v", args)
		return out.String()
	}
	require.Contains(t, run("migrate", "up", "--to", "1"), "schema at version 1")
	require.Contains(t, run("migrate", "status"), "pending")
	require.Contains(t, run("migrate", "up"), "applied 00002")
	require.Contains(t, run("migrate", "down"), "rolled back")
}
