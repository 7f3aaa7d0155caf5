package testharness_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }

func TestRepoRoot(t *testing.T) {
	t.Parallel()
	root := testharness.RepoRoot()
	require.FileExists(t, filepath.Join(root, "go.mod"))
	require.FileExists(t, filepath.Join(root, "testharness", "doc.go"))
}

func TestPostgresDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	pg := testharness.Postgres(t)
	ctx := context.Background()

	urlA, urlB := pg.NewDatabase(t), pg.NewDatabase(t)
	require.NotEqual(t, urlA, urlB)

	a := connect(t, urlA)
	_, err := a.Exec(ctx, `CREATE TABLE things (id int PRIMARY KEY); INSERT INTO things VALUES (1), (2)`)
	require.NoError(t, err)
	var n int
	require.NoError(t, a.QueryRow(ctx, `SELECT count(*) FROM things`).Scan(&n))
	require.Equal(t, 2, n)

	b := connect(t, urlB)
	var exists bool
	require.NoError(t, b.QueryRow(ctx, `SELECT to_regclass('things') IS NOT NULL`).Scan(&exists))
	require.False(t, exists, "a table of one test database is visible in another")

	var version string
	require.NoError(t, b.QueryRow(ctx, `SHOW server_version`).Scan(&version))
	t.Logf("postgres %s on port %d", version, pg.Port())

	var fsync string
	require.NoError(t, b.QueryRow(ctx, `SHOW fsync`).Scan(&fsync))
	require.Equal(t, "off", fsync)
}

func TestPostgresDatabaseDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	pg := testharness.Postgres(t)
	var name string
	parent := t
	t.Run("owner", func(t *testing.T) {
		url := pg.NewDatabase(t)
		// Closed by the parent, so it is still open when the database is dropped at the end of
		// this subtest: the drop must force it closed rather than fail.
		conn := connect(parent, url)
		require.NoError(t, conn.QueryRow(context.Background(), `SELECT current_database()`).Scan(&name))
	})
	admin := connect(t, pg.AdminURL())
	var exists bool
	require.NoError(t, admin.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists))
	require.False(t, exists, "database %s still exists after its test ended", name)
}

func TestPostgresStopStart(t *testing.T) {
	t.Parallel()
	pg := testharness.StartPostgres(t)
	url := pg.NewDatabase(t)
	ctx := context.Background()

	conn := connect(t, url)
	_, err := conn.Exec(ctx, `CREATE TABLE survives (v text); INSERT INTO survives VALUES ('yes')`)
	require.NoError(t, err)

	pg.Stop()
	_, err = pgx.Connect(ctx, url)
	require.Error(t, err, "connected to a stopped server")

	pg.Start()
	conn = connect(t, url)
	var v string
	require.NoError(t, conn.QueryRow(ctx, `SELECT v FROM survives`).Scan(&v))
	require.Equal(t, "yes", v)
}

func TestTemporalHealthAndSearchAttributes(t *testing.T) {
	t.Parallel()
	srv := testharness.Temporal(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := c.CheckHealth(ctx, &client.CheckHealthRequest{})
	require.NoError(t, err)

	const taskQueue = "testharness-echo"
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(echoWorkflow, workflow.RegisterOptions{Name: "echo"})
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	// Starting with the search attributes set fails unless the server declared them.
	keys := []temporal.SearchAttributeKeyKeyword{
		temporal.NewSearchAttributeKeyKeyword("TenantId"),
		temporal.NewSearchAttributeKeyKeyword("ClusterId"),
		temporal.NewSearchAttributeKeyKeyword("ProductId"),
		temporal.NewSearchAttributeKeyKeyword("PublishId"),
	}
	var updates []temporal.SearchAttributeUpdate
	for _, k := range keys {
		updates = append(updates, k.ValueSet("v-"+k.GetName()))
	}
	workflowID := fmt.Sprintf("testharness/echo/%d", time.Now().UnixNano())
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    workflowID,
		TaskQueue:             taskQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(updates...),
	}, "echo", "ping")
	require.NoError(t, err)
	var got string
	require.NoError(t, run.Get(ctx, &got))
	require.Equal(t, "ping", got)

	// The operator path the architecture relies on: the CLI reaches the same server.
	out := srv.RunCLI(t, "workflow", "describe", "--workflow-id", workflowID)
	require.Contains(t, out, "COMPLETED")
}

func echoWorkflow(_ workflow.Context, in string) (string, error) { return in, nil }

func TestProcessLifecycle(t *testing.T) {
	t.Parallel()
	bin := testharness.GoBuild(t, "./testharness/testdata/echoserver")
	addr := fmt.Sprintf("127.0.0.1:%d", testharness.FreePort(t))

	p := testharness.StartProcess(t, "echoserver", exec.Command(bin, addr))
	p.WaitReady(t, 10*time.Second, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "hello\n" {
			return fmt.Errorf("unexpected greeting %q", line)
		}
		return nil
	})

	require.NoError(t, p.Stop())
	exited, err := p.Exited()
	require.True(t, exited)
	require.NoError(t, err, "echoserver should exit 0 on SIGTERM")
	require.Contains(t, p.LogTail(50), "listening on "+addr)
	require.True(t, strings.HasSuffix(p.LogTail(1), "stopping"))
}

func TestProcessKill(t *testing.T) {
	t.Parallel()
	p := testharness.StartProcess(t, "sleeper", exec.Command("sleep", "300"))
	p.Kill()
	exited, err := p.Exited()
	require.True(t, exited)
	require.Error(t, err, "a killed process reports its signal")
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
