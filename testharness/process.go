package testharness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tailLines is how much of a process log is shown when a test fails.
const tailLines = 50

// stopGrace is how long a process gets to exit after its stop signal before it is killed.
const stopGrace = 15 * time.Second

// Process is a long-running child process whose stdout and stderr go to a log file.
//
// Children run in their own process group, so Stop and Kill reach everything they spawned, and
// with Pdeathsig set, so the kernel kills them if the test binary dies without cleaning up (a
// `go test -timeout` panic skips every deferred function and t.Cleanup).
type Process struct {
	name       string
	cmd        *exec.Cmd
	logPath    string
	stopSignal syscall.Signal

	done    chan struct{}
	waitErr error // set before done is closed
}

// StartProcess starts cmd as a child of the test. Its output is captured to a log file, whose
// last 50 lines are printed if t has failed when it ends; the process is stopped (SIGTERM, then
// SIGKILL after 15 s) when t ends. If cmd.Stdout or cmd.Stderr are already set, output goes
// there as well as to the log.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := startProcess(name, cmd, t.TempDir(), syscall.SIGTERM)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after t.TempDir, so it runs before the log directory is removed.
	t.Cleanup(func() {
		stopErr := p.Stop()
		if t.Failed() {
			t.Logf("testharness: last %d lines of %s log (%s):\n%s", tailLines, p.name, p.logPath, p.LogTail(tailLines))
		}
		if stopErr != nil {
			t.Errorf("testharness: %v", stopErr)
		}
	})
	return p
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func startProcess(name string, cmd *exec.Cmd, logDir string, stopSignal syscall.Signal) (*Process, error) {
	logFile, err := os.CreateTemp(logDir, unsafeFileChars.ReplaceAllString(name, "_")+"-*.log")
	if err != nil {
		return nil, fmt.Errorf("testharness: create log for %s: %w", name, err)
	}
	fmt.Fprintf(logFile, "### %s: %s\n", name, strings.Join(cmd.Args, " "))
	cmd.Stdout = teeTo(cmd.Stdout, logFile)
	cmd.Stderr = teeTo(cmd.Stderr, logFile)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL

	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("testharness: start %s (%s): %w", name, cmd.Path, err)
	}
	p := &Process{
		name:       name,
		cmd:        cmd,
		logPath:    logFile.Name(),
		stopSignal: stopSignal,
		done:       make(chan struct{}),
	}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func teeTo(w io.Writer, log *os.File) io.Writer {
	if w == nil {
		return log
	}
	return io.MultiWriter(w, log)
}

// Name is the name given at start, used in messages and the log file name.
func (p *Process) Name() string { return p.name }

// Pid is the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file that holds the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its exit error (nil for status 0).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Signal sends sig to the process (not to its whole group).
func (p *Process) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Stop asks the process to exit with its stop signal (SIGTERM for StartProcess), kills its
// whole process group if it has not exited after 15 s, and waits for it. The exit status of a
// process that was asked to stop is not an error; failing to make it exit is.
func (p *Process) Stop() error {
	if exited, _ := p.Exited(); !exited {
		_ = p.cmd.Process.Signal(p.stopSignal)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			p.killGroup()
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.Pid())
			}
		}
	}
	// Anything the process spawned and left behind in its group goes too.
	p.killGroup()
	return nil
}

// Kill kills the process and everything in its process group at once (no graceful shutdown),
// as a crash would, and waits for it to exit.
func (p *Process) Kill() {
	p.killGroup()
	<-p.done
}

func (p *Process) killGroup() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
}

// LogTail returns the last n lines of the process log.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitReady polls ready every 100 ms until it returns nil. It fails t, with the reason and the
// tail of the log, when the process exits first or timeout passes.
func (p *Process) WaitReady(t testing.TB, timeout time.Duration, ready func(ctx context.Context) error) {
	t.Helper()
	if err := p.waitReady(timeout, ready); err != nil {
		t.Fatal(err)
	}
}

// errExitedEarly marks a process that died while we waited for it to become ready; starters
// retry on it because the usual cause is a port taken between FreePort and bind.
var errExitedEarly = errors.New("exited before it was ready")

func (p *Process) waitReady(timeout time.Duration, ready func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		lastErr = ready(ctx)
		cancel()
		if lastErr == nil {
			return nil
		}
		if exited, exitErr := p.Exited(); exited {
			return fmt.Errorf("testharness: %s %w (%v); last %d lines of %s:\n%s",
				p.name, errExitedEarly, exitErr, tailLines, p.logPath, p.LogTail(tailLines))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testharness: %s not ready after %v: %v; last %d lines of %s:\n%s",
				p.name, timeout, lastErr, tailLines, p.logPath, p.LogTail(tailLines))
		}
		select {
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var sharedProcs struct {
	sync.Mutex
	list []*Process
}

// startSharedProcess starts a process that lives until Main ends (or until its owner stops it
// earlier), logging into the shared work dir.
func startSharedProcess(name string, cmd *exec.Cmd, stopSignal syscall.Signal) (*Process, error) {
	dir, err := sharedWorkDir()
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("testharness: create log dir: %w", err)
	}
	p, err := startProcess(name, cmd, logDir, stopSignal)
	if err != nil {
		return nil, err
	}
	sharedProcs.Lock()
	sharedProcs.list = append(sharedProcs.list, p)
	sharedProcs.Unlock()
	AtExit(func() {
		if err := p.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testharness: %v\n", err)
		}
	})
	return p, nil
}

// printSharedLogs shows what the shared processes said, for a test binary that failed: their
// logs are removed with the work dir right after.
func printSharedLogs() {
	sharedProcs.Lock()
	defer sharedProcs.Unlock()
	for _, p := range sharedProcs.list {
		fmt.Fprintf(os.Stderr, "--- testharness: last %d lines of %s log ---\n%s\n", tailLines, p.name, p.LogTail(tailLines))
	}
}
