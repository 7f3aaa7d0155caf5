package testharness

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// mainActive records that TestMain went through Main. Shared processes outlive the test that
// started them, so without Main nothing would stop them; starting one is refused instead.
var mainActive atomic.Bool

var shutdownState struct {
	sync.Mutex
	fns  []func() // run in reverse order of registration
	done bool
}

// Main runs the tests of m and then stops every process the harness started for the whole test
// binary (and everything registered with AtExit) and removes its temporary directories. Use it
// as os.Exit(testharness.Main(m)) in TestMain.
func Main(m *testing.M) int {
	mainActive.Store(true)

	// Ctrl-C on `go test` would otherwise leave the shared processes' temp dirs behind (the
	// processes themselves die with us through Pdeathsig).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "testharness: got %v, stopping harness processes\n", s)
		shutdown()
		os.Exit(130)
	}()

	code := m.Run()

	signal.Stop(sigs)
	close(sigs)
	if code != 0 {
		printSharedLogs()
	}
	shutdown()
	return code
}

// AtExit registers fn to run when Main finishes, after all tests, in reverse order of
// registration. Use it for fixtures shared by a whole test binary.
func AtExit(fn func()) {
	shutdownState.Lock()
	defer shutdownState.Unlock()
	if shutdownState.done {
		// Registering after shutdown means the fixture would leak; run it at once instead.
		go fn()
		return
	}
	shutdownState.fns = append(shutdownState.fns, fn)
}

func shutdown() {
	shutdownState.Lock()
	fns := shutdownState.fns
	shutdownState.fns = nil
	shutdownState.done = true
	shutdownState.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// requireMain fails t when the test binary's TestMain does not use Main.
func requireMain(t testing.TB) {
	t.Helper()
	if !mainActive.Load() {
		t.Fatal("testharness: this package's TestMain must be `func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }` " +
			"so that shared processes are stopped when the tests end")
	}
}

const workDirPrefix = "imprun-testharness-"

var workDir struct {
	once sync.Once
	path string
	err  error
}

// sharedWorkDir is the temporary directory for everything shared by this test binary (the
// Postgres cluster, process logs, built binaries). It is removed by Main.
func sharedWorkDir() (string, error) {
	workDir.once.Do(func() {
		sweepStaleWorkDirs()
		dir, err := os.MkdirTemp("", workDirPrefix)
		if err != nil {
			workDir.err = fmt.Errorf("testharness: create work dir: %w", err)
			return
		}
		// The Postgres cluster lives below this directory and may run as another user
		// (postgres, when we are root), which must be able to traverse it.
		if err := os.Chmod(dir, 0o755); err != nil {
			workDir.err = fmt.Errorf("testharness: chmod work dir: %w", err)
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			workDir.err = fmt.Errorf("testharness: write owner pid: %w", err)
			return
		}
		workDir.path = dir
		AtExit(func() { _ = os.RemoveAll(dir) })
	})
	return workDir.path, workDir.err
}

// sweepStaleWorkDirs removes the work dirs of test binaries that died without running Main's
// cleanup (killed by a `go test -timeout` panic or SIGKILL), so /tmp does not fill up with
// Postgres clusters over many runs.
func sweepStaleWorkDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue // being created right now, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
