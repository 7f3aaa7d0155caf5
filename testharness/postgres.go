package testharness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PG is a throwaway PostgreSQL cluster on 127.0.0.1 with trust authentication for the
// superuser "postgres". Durability is switched off (fsync, full_page_writes,
// synchronous_commit): the data lives only as long as the test binary, and tests go faster.
type PG struct {
	label   string
	binDir  string
	baseDir string // holds the data dir and the unix socket; owned by postgres when we are root
	dataDir string
	port    int
	cred    *syscall.Credential // nil unless we are root and must drop to the postgres user

	mu   sync.Mutex // serialises Start and Stop
	proc *Process   // nil while stopped

	dbSeq atomic.Int64
}

var sharedPG struct {
	once sync.Once
	pg   *PG
	err  error
}

// Postgres returns the PostgreSQL cluster shared by every test of the test binary, starting it
// on first use; Main stops it. Give each test its own database with NewDatabase. A test that
// stops the server must use StartPostgres instead, or it breaks the tests running beside it.
func Postgres(t testing.TB) *PG {
	t.Helper()
	requireMain(t)
	sharedPG.once.Do(func() {
		sharedPG.pg, sharedPG.err = newPG("postgres")
	})
	if sharedPG.err != nil {
		t.Fatal(sharedPG.err)
	}
	return sharedPG.pg
}

// StartPostgres starts a PostgreSQL cluster for t alone, removed when t ends. Use it for tests
// that Stop and Start the server ("Postgres is down") without disturbing other tests.
func StartPostgres(t testing.TB) *PG {
	t.Helper()
	requireMain(t)
	pg, err := newPG("postgres-" + t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pg.mu.Lock()
		defer pg.mu.Unlock()
		if p := pg.proc; p != nil {
			if err := p.Stop(); err != nil {
				t.Errorf("testharness: %v", err)
			}
			if t.Failed() {
				t.Logf("testharness: last %d lines of %s log:\n%s", tailLines, p.name, p.LogTail(tailLines))
			}
			pg.proc = nil
		}
		_ = os.RemoveAll(pg.baseDir)
	})
	return pg
}

func newPG(label string) (*PG, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	work, err := sharedWorkDir()
	if err != nil {
		return nil, err
	}
	baseDir, err := os.MkdirTemp(work, "pg-")
	if err != nil {
		return nil, fmt.Errorf("testharness: create postgres dir: %w", err)
	}
	pg := &PG{
		label:   label,
		binDir:  binDir,
		baseDir: baseDir,
		dataDir: filepath.Join(baseDir, "data"),
	}
	// initdb and postgres refuse to run as root. Running them with the postgres user's
	// credentials set by the kernel (rather than through runuser) keeps postgres our direct
	// child, so Pdeathsig and process-group kills reach it.
	if os.Geteuid() == 0 {
		pg.cred, err = postgresCredential()
		if err != nil {
			return nil, err
		}
		if err := os.Chown(baseDir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return nil, fmt.Errorf("testharness: chown %s to postgres: %w", baseDir, err)
		}
	}

	initdb := exec.Command(filepath.Join(binDir, "initdb"),
		"-D", pg.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
		"--no-sync", "--no-instructions")
	initdb.Dir = baseDir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testharness: initdb: %v\n%s", err, out)
	}

	// The port is free when picked but another process can bind it before postgres does;
	// then postgres exits at once and another port is tried.
	for attempt := 1; ; attempt++ {
		pg.port, err = freePort()
		if err != nil {
			return nil, fmt.Errorf("testharness: find a port for postgres: %w", err)
		}
		err = pg.start()
		if err == nil || !errors.Is(err, errExitedEarly) || attempt == 3 {
			return pg, err
		}
	}
}

// diagnosisArgs are the settings for looking into what a benchmark costs PostgreSQL:
// IMPRUN_HARNESS_PG_STATEMENTS=1 preloads pg_stat_statements with planning time (a database that
// wants it runs CREATE EXTENSION pg_stat_statements); IMPRUN_HARNESS_PG_EXPLAIN_MS=N logs the
// plan, with actual rows and buffers, of every statement (nested ones too) that ran N ms or
// longer, and every lock waited on for 5 ms, into IMPRUN_HARNESS_PG_LOG_DIR (default
// /tmp/imprun-pglog; postgres's own user writes there).
func diagnosisArgs() []string {
	var libs, args []string
	if os.Getenv("IMPRUN_HARNESS_PG_STATEMENTS") != "" {
		libs = append(libs, "pg_stat_statements")
		args = append(args, "-c", "pg_stat_statements.track_planning=on")
	}
	if ms, err := strconv.Atoi(os.Getenv("IMPRUN_HARNESS_PG_EXPLAIN_MS")); err == nil && ms >= 0 {
		dir := os.Getenv("IMPRUN_HARNESS_PG_LOG_DIR")
		if dir == "" {
			dir = "/tmp/imprun-pglog"
		}
		libs = append(libs, "auto_explain")
		args = append(args, "-c", "auto_explain.log_min_duration="+strconv.Itoa(ms), "-c", "auto_explain.log_analyze=on",
			"-c", "auto_explain.log_buffers=on", "-c", "auto_explain.log_nested_statements=on",
			"-c", "logging_collector=on", "-c", "log_directory="+dir, "-c", "log_lock_waits=on", "-c", "deadlock_timeout=5ms")
	}
	if len(libs) == 0 {
		return nil
	}
	return append(args, "-c", "shared_preload_libraries="+strings.Join(libs, ","))
}

// start launches postgres on pg.port; pg.mu is held or pg is not yet shared.
func (pg *PG) start() error {
	cmd := exec.Command(filepath.Join(pg.binDir, "postgres"),
		"-D", pg.dataDir,
		"-p", strconv.Itoa(pg.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+pg.baseDir,
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "synchronous_commit=off",
		// Every CREATE DATABASE forces a checkpoint; logging each one buries what matters.
		"-c", "log_checkpoints=off",
		// Each test opens its own pool against its own database, and tests run in parallel.
		"-c", "max_connections=300",
	)
	cmd.Args = append(cmd.Args, diagnosisArgs()...)
	cmd.Dir = pg.baseDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	// SIGINT is postgres's "fast" shutdown; SIGTERM would wait for every client to disconnect.
	proc, err := startSharedProcess(pg.label, cmd, syscall.SIGINT)
	if err != nil {
		return err
	}
	if err := proc.waitReady(60*time.Second, pg.ping); err != nil {
		_ = proc.Stop()
		return err
	}
	pg.proc = proc
	return nil
}

func (pg *PG) ping(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, pg.AdminURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// Port is the TCP port the server listens on (127.0.0.1 only).
func (pg *PG) Port() int { return pg.port }

// URL returns the connection URL of database db as the superuser.
func (pg *PG) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, db)
}

// AdminURL is the URL of the "postgres" maintenance database as the superuser.
func (pg *PG) AdminURL() string { return pg.URL("postgres") }

// NewDatabase creates an empty database with a name unique in this cluster and returns its URL
// (postgres://postgres@127.0.0.1:PORT/NAME?sslmode=disable). The database is dropped, with any
// connections still open to it, when t ends.
func (pg *PG) NewDatabase(t testing.TB) string {
	t.Helper()
	name := pg.databaseName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testharness: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		pg.mu.Lock()
		running := pg.proc != nil
		pg.mu.Unlock()
		if !running {
			// A test that stopped its own cluster: the database goes with the cluster.
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.adminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testharness: drop database %s: %v", name, err)
		}
	})
	return pg.URL(name)
}

var nonIdentChars = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName makes a name that shows which test owns the database (handy in pg_stat_activity
// and in failure messages) and stays within Postgres's 63-byte identifier limit.
func (pg *PG) databaseName(t testing.TB) string {
	base := strings.Trim(nonIdentChars.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	return fmt.Sprintf("t_%s_%d", base, pg.dbSeq.Add(1))
}

func (pg *PG) adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, pg.AdminURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the server down (fast shutdown: open connections are closed) and waits until it
// has exited. It panics if the server cannot be stopped.
func (pg *PG) Stop() {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc == nil {
		return
	}
	if err := pg.proc.Stop(); err != nil {
		panic(fmt.Sprintf("testharness: stop %s: %v", pg.label, err))
	}
	pg.proc = nil
}

// Start starts a stopped server again on the same port with the same data, and waits until it
// accepts connections. It panics if the server does not come back.
func (pg *PG) Start() {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc != nil {
		return
	}
	if err := pg.start(); err != nil {
		panic(fmt.Sprintf("testharness: restart %s on port %d: %v", pg.label, pg.port, err))
	}
}

// postgresBinDir finds the server binaries of the highest PostgreSQL version installed the
// Debian way (/usr/lib/postgresql/<major>/bin), else on PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type versioned struct {
		dir   string
		major int
	}
	var found []versioned
	for _, dir := range dirs {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		if err != nil || !isExecutable(filepath.Join(dir, "initdb")) || !isExecutable(filepath.Join(dir, "postgres")) {
			continue
		}
		found = append(found, versioned{dir, major})
	}
	if len(found) > 0 {
		sort.Slice(found, func(i, j int) bool { return found[i].major > found[j].major })
		return found[0].dir, nil
	}
	if initdb, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(initdb)
		if isExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", errors.New("testharness: PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH; " +
		"run `bash scripts/tools.sh` from the repository root to install them")
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("testharness: running as root, and PostgreSQL refuses root, but there is no postgres user (%v); "+
			"run `bash scripts/tools.sh` to install the postgresql package, which creates it", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("testharness: postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("testharness: postgres gid %q: %w", u.Gid, err)
	}
	// An empty Groups list drops root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}
