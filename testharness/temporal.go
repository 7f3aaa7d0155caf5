package testharness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/imprun/imprun-server/temporalclient"
)

// searchAttributes are the custom search attributes every workflow of imprun registers
// (ARCHITECTURE.md); the dev server must declare them or starting such a workflow fails.
var searchAttributes = []string{"TenantId", "ClusterId", "ProductId", "PublishId", "RolloutId"}

// TemporalServer is a Temporal dev server (`temporal server start-dev`) with in-memory state,
// no Web UI, and the "default" namespace carrying imprun's search attributes.
type TemporalServer struct {
	cli       string
	hostPort  string
	namespace string
	proc      *Process
	dbFile    string // StartTemporalWith only
	logDir    string
}

var sharedTemporal struct {
	once sync.Once
	srv  *TemporalServer
	err  error
}

// Temporal returns the Temporal dev server shared by every test of the test binary, starting
// it on first use (and building bin/temporal with scripts/tools.sh if it is missing); Main stops
// it. Tests keep apart by using their own task queues and workflow IDs.
func Temporal(t testing.TB) *TemporalServer {
	t.Helper()
	requireMain(t)
	sharedTemporal.once.Do(func() {
		sharedTemporal.srv, sharedTemporal.err = startTemporal()
	})
	if sharedTemporal.err != nil {
		t.Fatal(sharedTemporal.err)
	}
	return sharedTemporal.srv
}

func startTemporal() (*TemporalServer, error) {
	cli, err := ensureRepoTool("temporal")
	if err != nil {
		return nil, err
	}
	// As with Postgres, a port picked free can be taken before the server binds it; start-dev
	// then exits at once and another port is tried.
	for attempt := 1; ; attempt++ {
		srv, err := startTemporalOnce(cli)
		if err == nil || !errors.Is(err, errExitedEarly) || attempt == 3 {
			return srv, err
		}
	}
}

func startTemporalOnce(cli string) (*TemporalServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("testharness: find a port for temporal: %w", err)
	}
	args := []string{"server", "start-dev",
		"--headless",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--namespace", "default",
	}
	for _, sa := range searchAttributes {
		args = append(args, "--search-attribute", sa+"=Keyword")
	}
	srv := &TemporalServer{
		cli:       cli,
		hostPort:  "127.0.0.1:" + strconv.Itoa(port),
		namespace: "default",
	}
	srv.proc, err = startSharedProcess("temporal", exec.Command(cli, args...), syscall.SIGTERM)
	if err != nil {
		return nil, err
	}
	if err := srv.proc.waitReady(60*time.Second, srv.ready); err != nil {
		_ = srv.proc.Stop()
		return nil, err
	}
	return srv, nil
}

// ready is true once the frontend answers health checks, the namespace exists and the search
// attributes are visible: a test that starts a workflow right after Temporal() must not race the
// server's startup.
func (s *TemporalServer) ready(ctx context.Context) error {
	opts := s.clientOptions()
	// "Frontend is not healthy yet" is expected while starting; the SDK logs it as an error.
	opts.Logger = tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	if _, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.namespace}); err != nil {
		return err
	}
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.namespace})
	if err != nil {
		return err
	}
	for _, sa := range searchAttributes {
		if typ, ok := resp.GetCustomAttributes()[sa]; !ok || typ != enums.INDEXED_VALUE_TYPE_KEYWORD {
			return fmt.Errorf("search attribute %s is not a Keyword in namespace %s (got %v)", sa, s.namespace, resp.GetCustomAttributes())
		}
	}
	return nil
}

// HostPort is the frontend gRPC address, for client.Options.HostPort or IMPRUN_* config.
func (s *TemporalServer) HostPort() string { return s.hostPort }

// Namespace is the namespace tests use ("default").
func (s *TemporalServer) Namespace() string { return s.namespace }

// CLIPath is the path of the Temporal CLI binary (bin/temporal).
func (s *TemporalServer) CLIPath() string { return s.cli }

// Client dials a new SDK client for the server's namespace, closed when t ends. The SDK's own
// logging is limited to warnings so test output stays readable.
func (s *TemporalServer) Client(t testing.TB) client.Client {
	t.Helper()
	return s.ClientWith(t, nil)
}

// ClientWith is Client with options of the caller's (a metrics handler, interceptors) applied
// by edit.
func (s *TemporalServer) ClientWith(t testing.TB, edit func(*client.Options)) client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := s.clientOptions()
	if edit != nil {
		edit(&opts)
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		t.Fatalf("testharness: dial temporal at %s: %v", s.hostPort, err)
	}
	t.Cleanup(c.Close)
	return c
}

func (s *TemporalServer) clientOptions() client.Options {
	compression, _ := temporalclient.Compression("") // the api's and the worker's default
	return client.Options{
		HostPort:  s.hostPort,
		Namespace: s.namespace,
		// With tracing installed (a tracing test), the clients and workers carry spans.
		Interceptors:      temporalclient.Interceptors(),
		Logger:            tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		ConnectionOptions: client.ConnectionOptions{GrpcCompression: compression},
	}
}

// RunCLI runs the Temporal CLI against this server, as an operator would (for example
// `workflow signal --workflow-id subscription/<id> --name approve --input '{...}'`), and returns
// its combined output. --address and --namespace are added; a non-zero exit fails t.
func (s *TemporalServer) RunCLI(t testing.TB, args ...string) string {
	t.Helper()
	args = append(args, "--address", s.hostPort, "--namespace", s.namespace)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.cli, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("testharness: temporal %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// StartTemporalWith starts a Temporal dev server for t alone that keeps its state in dbFile
// (`start-dev --db-filename`), so Restart (a crash and a start on the same port and file)
// keeps every workflow. The shared server of Temporal is not touched; this one is stopped when
// t ends.
func StartTemporalWith(t testing.TB, dbFile string) *TemporalServer {
	t.Helper()
	requireMain(t)
	cli, err := ensureRepoTool("temporal")
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		srv := &TemporalServer{cli: cli, hostPort: "127.0.0.1:" + strconv.Itoa(port), namespace: "default", dbFile: dbFile, logDir: t.TempDir()}
		err = srv.startPersistent()
		if err == nil {
			t.Cleanup(func() {
				if p := srv.proc; p != nil {
					if err := p.Stop(); err != nil {
						t.Errorf("testharness: %v", err)
					}
					if t.Failed() {
						t.Logf("testharness: last %d lines of temporal log:\n%s", tailLines, p.LogTail(tailLines))
					}
				}
			})
			return srv
		}
		if !errors.Is(err, errExitedEarly) || attempt == 3 {
			t.Fatal(err)
		}
	}
}

func (s *TemporalServer) startPersistent() error {
	_, port, _ := strings.Cut(s.hostPort, ":")
	args := []string{"server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", port,
		"--namespace", "default", "--db-filename", s.dbFile}
	for _, sa := range searchAttributes {
		args = append(args, "--search-attribute", sa+"=Keyword")
	}
	proc, err := startProcess("temporal", exec.Command(s.cli, args...), s.logDir, syscall.SIGTERM)
	if err != nil {
		return err
	}
	if err := proc.waitReady(60*time.Second, s.ready); err != nil {
		_ = proc.Stop()
		return err
	}
	s.proc = proc
	return nil
}

// Restart kills a server started by StartTemporalWith (SIGKILL, as a crash would) and starts
// it again on the same port and database file, waiting until it is ready. Workflows survive.
func (s *TemporalServer) Restart(t testing.TB) {
	t.Helper()
	if s.dbFile == "" {
		t.Fatal("testharness: Restart needs a server started by StartTemporalWith")
	}
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
	var err error
	for i := 0; i < 50; i++ { // the port may take a moment to free
		if err = s.startPersistent(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("testharness: restart temporal on %s: %v", s.hostPort, err)
}
