package testharness

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var repoRoot struct {
	once sync.Once
	path string
}

// RepoRoot returns the root of the imprun-server checkout: the nearest directory at or above the
// working directory (a test binary runs in its package directory) that holds go.mod. It panics
// when there is none, since nothing in the harness can work without it.
func RepoRoot() string {
	repoRoot.once.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			panic(fmt.Sprintf("testharness: getwd: %v", err))
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				repoRoot.path = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				panic("testharness: no go.mod found above the working directory; run the tests inside the imprun-server checkout")
			}
			dir = parent
		}
	})
	return repoRoot.path
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another process can
// still take it before the caller binds it, so starters of servers retry on "address in use".
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testharness: find a free port: %v", err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureRepoTool returns the absolute path of bin/<name> in the checkout, running
// scripts/tools.sh first when it is missing. The run happens under an exclusive flock on
// bin/.tools.lock, the same lock the script takes for other callers, so that test binaries
// running in parallel build the Temporal CLI once, not once each.
func ensureRepoTool(name string) (string, error) {
	root := RepoRoot()
	path := filepath.Join(root, "bin", name)
	if isExecutable(path) {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		return "", fmt.Errorf("testharness: create bin/: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(root, "bin", ".tools.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("testharness: open tools lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("testharness: lock tools: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too

	// Another test binary may have built it while we waited for the lock.
	if isExecutable(path) {
		return path, nil
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "tools.sh"))
	cmd.Dir = root
	// Tells the script we hold its lock already. Not IMPRUN_-prefixed: config rejects unknown
	// IMPRUN_* variables, and this one must never reach a server process by accident.
	cmd.Env = append(os.Environ(), "TOOLS_SH_LOCK_HELD=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("testharness: bin/%s is missing and scripts/tools.sh failed (%v):\n%s", name, err, out.String())
	}
	if !isExecutable(path) {
		return "", fmt.Errorf("testharness: scripts/tools.sh ran but bin/%s is still missing:\n%s", name, out.String())
	}
	return path, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

var builds struct {
	sync.Mutex
	byPkg map[string]*buildResult
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// GoBuild compiles the main package pkg (a path relative to the repository root, such as
// "./cmd/agent") once per test binary and returns the path of the executable, so end-to-end
// tests run the real binaries rather than in-process stand-ins.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	requireMain(t)
	builds.Lock()
	if builds.byPkg == nil {
		builds.byPkg = map[string]*buildResult{}
	}
	r := builds.byPkg[pkg]
	if r == nil {
		r = &buildResult{}
		builds.byPkg[pkg] = r
	}
	builds.Unlock()

	r.once.Do(func() {
		dir, err := sharedWorkDir()
		if err != nil {
			r.err = err
			return
		}
		name := strings.NewReplacer("/", "_", ".", "_").Replace(strings.Trim(pkg, "./"))
		out := filepath.Join(dir, "bin", name)
		// No VCS stamp: tests do not need it, and it fails in a clone owned by another user.
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, pkg)
		cmd.Dir = RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("testharness: go build %s: %v\n%s", pkg, err, b)
			return
		}
		r.path = out
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}
