package nginx

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

const sighup = syscall.SIGHUP

// process is the nginx master: a child this agent started, or one it adopted by pid file.
type process struct {
	pid int

	mu     sync.Mutex
	exited bool          // a child that was reaped
	done   chan struct{} // closed when a child exits; nil for an adopted master
}

// startProcess starts nginx in the foreground of its own session, so it survives the agent (a
// restarted agent adopts it) and terminal signals meant for the agent do not reach it.
func startProcess(bin, dir, errorLog string) (*process, error) {
	out, err := os.OpenFile(filepath.Join(dir, "logs", "nginx.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(bin, "-p", dir+"/", "-c", filepath.Join(dir, "current", "nginx.conf"), "-e", errorLog, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// adopt returns the running master named by pidFile when it is an nginx master of dir.
func adopt(pidFile, dir string) *process {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return nil
	}
	p := &process{pid: pid}
	if !p.alive() || !isMasterOf(pid, dir) {
		return nil
	}
	return p
}

// isMasterOf checks /proc: pid numbers are reused, and signalling a stranger would be bad.
func isMasterOf(pid int, dir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	s := string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	return strings.Contains(s, "nginx: master process") && strings.Contains(s, dir)
}

func (p *process) alive() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited {
		return false
	}
	if p.done == nil {
		// An adopted master is not our child: a zombie cannot linger for us, but check that it
		// is not one for its real parent either.
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid)); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				return false
			}
		}
	}
	return syscall.Kill(p.pid, 0) == nil
}

func (p *process) signal(sig syscall.Signal) error {
	if !p.alive() {
		return errors.New("nginx master is not running")
	}
	return syscall.Kill(p.pid, sig)
}

// stop sends SIGQUIT and waits, then SIGKILL.
func (p *process) stop(timeout time.Duration) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGQUIT); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // its process group: the workers too
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	return fmt.Errorf("nginx did not stop within %s; killed", timeout)
}

// workers lists the master's worker processes that still accept connections (not "shutting
// down").
func (p *process) workers() []int {
	var pids []int
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.pid, p.pid)); err == nil {
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
	} else {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			n, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
			if err != nil {
				continue
			}
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 && f[1] == strconv.Itoa(p.pid) {
					pids = append(pids, n)
				}
			}
		}
	}
	out := pids[:0]
	for _, n := range pids {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n))
		if err != nil || !bytes.Contains(cmdline, []byte("worker process")) || bytes.Contains(cmdline, []byte("shutting down")) {
			continue
		}
		out = append(out, n)
	}
	return out
}

// queryGeneration asks the status server which generation answers a fresh connection.
func (s *Server) queryGeneration(ctx context.Context) string {
	tr := &http.Transport{
		DisableKeepAlives: true, // a kept-alive connection would stay with an old worker
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.statusSocket())
		},
	}
	defer tr.CloseIdleConnections()
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(qctx, http.MethodGet, "http://nginx/imprun/generation", nil)
	if err != nil {
		return ""
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(body)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// linesSince reads the lines written to path after offset.
func linesSince(path string, offset int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// emergSince returns the first [emerg] line written after offset.
func emergSince(path string, offset int64) string {
	for _, l := range linesSince(path, offset) {
		if strings.Contains(l, "[emerg]") {
			return logMessage(l)
		}
	}
	return ""
}

// lastErrorSince returns the last [emerg], [alert], [crit] or [error] line after offset.
func lastErrorSince(path string, offset int64) string {
	var last string
	for _, l := range linesSince(path, offset) {
		for _, lvl := range []string{"[emerg]", "[alert]", "[crit]", "[error]"} {
			if strings.Contains(l, lvl) {
				last = logMessage(l)
			}
		}
	}
	return last
}

// logLine matches "2026/12/01 20:06:59 [emerg] 5908#5908: message".
var logLine = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: (?:\*\d+ )?`)

func logMessage(l string) string {
	return trimMessage(logLine.ReplaceAllString(l, "$1 "))
}

// sitePath finds "sites/<id>/" in nginx's messages.
var sitePath = regexp.MustCompile(`(?:^|[^A-Za-z0-9_.-])sites/([A-Za-z0-9][A-Za-z0-9_.-]*)/`)

// blamedSite is the site whose file nginx names in msg.
func blamedSite(msg string) string {
	if m := sitePath.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// cleanMessage keeps nginx's complaints from nginx -t output: its [emerg]/[alert]/[warn] lines
// without the "nginx: " prefix and the "test failed" trailer, with the scratch directory cut
// from file paths so the message names "sites/<id>/<file>:<line>".
func cleanMessage(out, dir string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "nginx: "))
		if l == "" || strings.HasPrefix(l, "configuration file") || strings.HasPrefix(l, "the configuration file") {
			continue
		}
		if strings.Contains(l, "[warn]") {
			continue
		}
		keep = append(keep, strings.ReplaceAll(l, dir+"/", ""))
	}
	if len(keep) == 0 {
		keep = []string{strings.TrimSpace(out)}
	}
	return trimMessage(strings.Join(keep, "; "))
}

// maxMessage bounds messages that travel to the control plane.
const maxMessage = 1000

// trimMessage cuts s to maxMessage bytes on a rune boundary and drops invalid UTF-8.
func trimMessage(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
