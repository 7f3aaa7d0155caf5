package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Server. Dir is required.
type Options struct {
	// Binary is the nginx executable: "nginx" from PATH, else /usr/sbin/nginx, when empty.
	Binary string
	// Dir holds everything of this nginx (see the package comment). Created when missing.
	Dir string
	// WorkerProcesses is worker_processes ("auto" when empty).
	WorkerProcesses string
	// WorkerConnections is worker_connections (1024 when zero).
	WorkerConnections int
	// ConfirmTimeout bounds the wait for a reload to take (10 s when zero).
	ConfirmTimeout time.Duration
	// HeadersMoreModule is the path of ngx_http_headers_more_filter_module.so; when set, the
	// main configuration loads it and clears every client-sent X-Imprun-* header.
	HeadersMoreModule string
	// Listens are sockets nginx always listens on, with a default server, even when no site
	// uses them (the gateway's configured addresses: a withdrawn host answers 404, not a
	// refused connection).
	Listens []Listen
	// Logger receives structured logs; slog.Default() when nil.
	Logger *slog.Logger
}

// SiteError is why a site was left out of the tree: the step that refused it and nginx's own
// words.
type SiteError struct {
	Step    string // "validate", "nginx -t", "bind", "reload"
	Message string
}

func (e *SiteError) Error() string { return e.Step + ": " + e.Message }

// ErrNotRunning is returned by Apply when nginx is not running and cannot be started.
var ErrNotRunning = errors.New("nginx is not running")

// Server is one nginx the agent owns. Its methods are safe for concurrent use; applies are
// serialised.
type Server struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	live    map[string]Site // what the running nginx serves, by site id
	liveGen string
	seq     int
	proc    *process
	// tampered are live sites whose files in the current generation no longer hold what was
	// loaded (edited by hand, removed): the next Apply writes them again even when the desired
	// content is unchanged. lastDrift is the last Drift answer, returned while an apply runs.
	tampered  map[string]string
	lastDrift map[string]string

	// skipBindCheck lets tests reach the reload with a socket another process holds.
	skipBindCheck bool
}

// New checks opts and prepares the directory; it does not start nginx.
func New(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("nginx: a directory is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	opts.Dir = dir
	if opts.Binary == "" {
		opts.Binary = DefaultBinary()
	}
	if opts.WorkerProcesses == "" {
		opts.WorkerProcesses = "auto"
	}
	if opts.WorkerConnections <= 0 {
		opts.WorkerConnections = 1024
	}
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "nginx"), live: map[string]Site{}}
	if _, err := exec.LookPath(opts.Binary); err != nil {
		return nil, fmt.Errorf("nginx: binary %q not found: %w", opts.Binary, err)
	}
	for _, d := range []string{"gen", "logs", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("nginx: %w", err)
		}
	}
	// The parent of a private state directory is not enough for nginx's workers, which may run
	// as another user; they only need the temporary directories.
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "gen")); err == nil {
		for _, e := range entries {
			if n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "g")); err == nil && n > s.seq {
				s.seq = n
			}
		}
	}
	return s, nil
}

// DefaultBinary is nginx from PATH, else Debian's /usr/sbin/nginx (not in a non-root PATH).
func DefaultBinary() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return "nginx"
}

// HeadersMoreModulePath returns Debian's headers-more module when it is installed.
func HeadersMoreModulePath() string {
	for _, p := range []string{
		"/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so",
		"/usr/share/nginx/modules/ngx_http_headers_more_filter_module.so",
	} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func (s *Server) pidFile() string      { return filepath.Join(s.opts.Dir, "run", "nginx.pid") }
func (s *Server) statusSocket() string { return filepath.Join(s.opts.Dir, "run", "status.sock") }
func (s *Server) errorLog() string     { return filepath.Join(s.opts.Dir, "logs", "error.log") }

// Dir is the server's directory.
func (s *Server) Dir() string { return s.opts.Dir }

// Generation is the generation nginx serves ("" before the first apply).
func (s *Server) Generation() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveGen
}

// Start makes nginx serve sites: it adopts an nginx already running on this directory (its pid
// file names a live master of this directory) or starts one, and applies sites as Apply does.
func (s *Server) Start(ctx context.Context, sites []Site) (map[string]error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := adopt(s.pidFile(), s.opts.Dir); p != nil {
		s.proc = p
		s.liveGen = s.currentGeneration()
		live, err := s.readSites(s.liveGen)
		if err != nil || s.queryGeneration(ctx) != s.liveGen {
			// Not sure what it serves: every site counts as changed and the tree is reloaded.
			s.log.Warn("adopted nginx serves an unknown tree; reloading it", "pid", p.pid, "err", err)
			live, s.liveGen = map[string]Site{}, ""
		}
		s.live = live
		s.log.Info("adopted running nginx", "pid", p.pid, "generation", s.liveGen, "sites", len(live))
		return s.applyLocked(ctx, sites)
	}
	s.live, s.liveGen = map[string]Site{}, ""
	return s.applyLocked(ctx, sites)
}

// Apply makes nginx serve exactly sites (the whole desired set). Sites whose content did not
// change are not touched; when nothing changed nginx is not reloaded. A changed site that
// nginx refuses is left out (its previous content, if any, keeps serving) and its error is
// returned in refused; the error is for failures that left the whole tree as it was.
func (s *Server) Apply(ctx context.Context, sites []Site) (refused map[string]error, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(ctx, sites)
}

func (s *Server) applyLocked(ctx context.Context, sites []Site) (map[string]error, error) {
	refused := map[string]error{}
	desired := map[string]Site{}
	for _, site := range sites {
		if err := site.validate(); err != nil {
			refused[site.ID] = &SiteError{Step: "validate", Message: err.Error()}
			continue
		}
		desired[site.ID] = site
	}
	running := s.proc != nil && s.proc.alive()
	changed := map[string]bool{}
	for id, site := range desired {
		if cur, ok := s.live[id]; !ok || cur.hash() != site.hash() || s.tampered[id] != "" {
			changed[id] = true
		}
	}
	removed := 0
	for id := range s.live {
		if _, ok := desired[id]; !ok {
			removed++
		}
	}
	if running && len(changed) == 0 && removed == 0 {
		return refused, nil
	}

	began := time.Now()
	tree, err := s.check(ctx, desired, changed, refused)
	checked := time.Now()
	if err != nil {
		return refused, err
	}
	if running && sameSites(tree, s.live) && len(s.tampered) == 0 {
		return refused, nil // every change was refused
	}

	// The scratch tree that passed nginx -t is exactly tree: it becomes the generation, with
	// only its main file (which names the generation) written again.
	s.seq++
	gen := fmt.Sprintf("g%06d", s.seq)
	if err := s.promoteCheck(gen, sortedSites(tree)); err != nil {
		return refused, fmt.Errorf("stage generation %s: %w", gen, err)
	}
	prevGen := s.liveGen
	if err := s.swapCurrent(gen); err != nil {
		return refused, err
	}
	staged := time.Now()
	if err := s.load(ctx, gen, running); err != nil {
		s.log.Error("nginx did not take the new generation; restoring the last good tree", "generation", gen, "err", err)
		if prevGen != "" {
			if rerr := s.swapCurrent(prevGen); rerr != nil {
				s.log.Error("restore last good tree", "err", rerr)
			} else if s.proc != nil && s.proc.alive() && s.queryGeneration(ctx) != prevGen {
				if rerr := s.load(ctx, prevGen, true); rerr != nil {
					s.log.Error("reload the last good tree", "err", rerr)
				}
			}
		}
		_ = os.RemoveAll(filepath.Join(s.opts.Dir, "gen", gen))
		return refused, err
	}
	s.live, s.liveGen = tree, gen
	s.tampered = nil // the new generation was written whole
	s.pruneGenerations(gen, prevGen)
	s.log.Info("nginx serves a new generation", "generation", gen, "sites", len(tree), "changed", len(changed), "removed", removed, "refused", len(refused),
		"check_ms", ms(checked.Sub(began)), "stage_ms", ms(staged.Sub(checked)), "reload_ms", ms(time.Since(staged)))
	return refused, nil
}

// check returns the tree to load: the desired sites minus the changed ones nginx refuses
// (recorded in refused; their previous content stays when they had one). An error means the
// tree without any change fails too.
func (s *Server) check(ctx context.Context, desired map[string]Site, changed map[string]bool, refused map[string]error) (map[string]Site, error) {
	c := &siteCheck{s: s, tree: map[string]Site{}, changed: changed, refused: refused}
	for id, site := range desired {
		c.tree[id] = site
	}
	if err := c.testUntilClean(ctx, len(desired)); err != nil {
		return nil, err
	}
	if c.refuseUnbindable() {
		// The scratch tree must be the tree that is loaded: test it once more without them.
		msg, err := s.test(ctx, c.tree)
		if err != nil {
			return nil, err
		}
		if msg != "" {
			return nil, fmt.Errorf("nginx -t: %s", msg)
		}
	}
	return c.tree, nil
}

// siteCheck is one run of check: the tree under test, the changes still in it and the sites
// refused so far.
type siteCheck struct {
	s       *Server
	tree    map[string]Site
	changed map[string]bool
	refused map[string]error
}

// refuse takes a changed site out of the tree: its previous content stays when it had one.
func (c *siteCheck) refuse(id string, err error) {
	c.refused[id] = err
	delete(c.changed, id)
	if prev, ok := c.s.live[id]; ok {
		c.tree[id] = prev
	} else {
		delete(c.tree, id)
	}
}

// testUntilClean runs nginx -t and refuses the changes it blames until the tree passes; a tree
// with no change left that still fails is the error.
func (c *siteCheck) testUntilClean(ctx context.Context, desired int) error {
	for attempt := 0; ; attempt++ {
		msg, err := c.s.test(ctx, c.tree)
		if err != nil {
			return err
		}
		if msg == "" {
			return nil
		}
		if len(c.changed) == 0 || attempt > desired+1 {
			return fmt.Errorf("nginx -t: %s", msg)
		}
		if id := blamedSite(msg); id != "" && c.changed[id] {
			c.refuse(id, &SiteError{Step: "nginx -t", Message: msg})
			continue
		}
		// nginx blamed a file that did not change (two sites that clash, in include order) or
		// none: try each change alone next to what did not change.
		if err := c.refuseEachAlone(ctx, msg); err != nil {
			return err
		}
	}
}

// refuseEachAlone tests each change alone next to the unchanged sites and refuses those that
// fail; when each passes alone, not together, it refuses them all rather than guess.
func (c *siteCheck) refuseEachAlone(ctx context.Context, msg string) error {
	base := map[string]Site{}
	for id, site := range c.tree {
		if !c.changed[id] {
			base[id] = site
		}
	}
	var bad []string
	for id := range c.changed {
		trial := map[string]Site{id: c.tree[id]}
		for bid, site := range base {
			trial[bid] = site
		}
		m, err := c.s.test(ctx, trial)
		if err != nil {
			return err
		}
		if m != "" {
			bad = append(bad, id)
			c.refuse(id, &SiteError{Step: "nginx -t", Message: m})
		}
	}
	if len(bad) == 0 {
		for id := range c.changed {
			c.refuse(id, &SiteError{Step: "nginx -t", Message: msg})
		}
	}
	return nil
}

// refuseUnbindable refuses the changed sites with a listener nobody holds that cannot be bound:
// nginx -t does not bind, and a socket another process holds would make the reload fail for
// every site, so the new ones are tried first. It reports whether it refused any.
func (c *siteCheck) refuseUnbindable() bool {
	s := c.s
	held := map[string]bool{}
	if len(s.live) > 0 || s.liveGen != "" {
		for _, l := range s.opts.Listens {
			held[l.Addr] = true
		}
	}
	for _, site := range s.live {
		for _, l := range site.Listens {
			held[l.Addr] = true
		}
	}
	bindRefused := false
	for _, id := range sortedIDs(c.changed) {
		site, ok := c.tree[id]
		if !ok || s.skipBindCheck {
			continue
		}
		for _, l := range site.Listens {
			if held[l.Addr] {
				continue
			}
			if err := tryBind(l.Addr); err != nil {
				c.refuse(id, &SiteError{Step: "bind", Message: fmt.Sprintf("listener %s is not available: %v", l.Addr, err)})
				bindRefused = true
				break
			}
			held[l.Addr] = true
		}
	}
	return bindRefused
}

// promoteCheck makes the scratch tree of the last successful nginx -t generation gen.
func (s *Server) promoteCheck(gen string, sites []Site) error {
	dir := filepath.Join(s.opts.Dir, "gen", gen)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(s.opts.Dir, "gen", "check"), dir); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "nginx.conf"), s.mainConfig(gen, sites), 0o644)
}

// test runs nginx -t on a scratch generation holding tree. It returns nginx's complaint ("" when
// the tree is fine); the error is for a test that could not run at all.
func (s *Server) test(ctx context.Context, tree map[string]Site) (string, error) {
	dir, err := s.writeGeneration("check", sortedSites(tree))
	if err != nil {
		return "", fmt.Errorf("stage nginx -t: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(tctx, s.opts.Binary, "-t", "-q", "-p", s.opts.Dir+"/", "-c", filepath.Join(dir, "nginx.conf"),
		"-e", filepath.Join(s.opts.Dir, "logs", "check.log"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		return "", nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return "", fmt.Errorf("run %s -t: %w", s.opts.Binary, err)
	}
	return cleanMessage(string(out), dir), nil
}

// load makes nginx serve gen: a reload when it runs, a start when it does not, and a
// confirmation either way.
func (s *Server) load(ctx context.Context, gen string, running bool) error {
	offset := fileSize(s.errorLog())
	var old []int
	if running {
		old = s.proc.workers()
		if err := s.proc.signal(sighup); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
	} else {
		p, err := startProcess(s.opts.Binary, s.opts.Dir, s.errorLog())
		if err != nil {
			return fmt.Errorf("start nginx: %w", err)
		}
		s.proc = p
	}
	return s.confirm(ctx, gen, offset, old)
}

// confirm waits until a fresh connection to the status server answers gen (new workers serve)
// and the old workers stopped accepting, failing as soon as the error log shows an [emerg] or
// the master is gone.
func (s *Server) confirm(ctx context.Context, gen string, offset int64, oldWorkers []int) error {
	deadline := time.Now().Add(s.opts.ConfirmTimeout)
	served := false
	for {
		if !served {
			served = s.queryGeneration(ctx) == gen
		}
		if served && !stillAccepting(s.proc, oldWorkers) {
			return nil
		}
		if line := emergSince(s.errorLog(), offset); line != "" {
			return &SiteError{Step: "reload", Message: line}
		}
		if s.proc == nil || !s.proc.alive() {
			msg := "nginx exited"
			if line := lastErrorSince(s.errorLog(), offset); line != "" {
				msg += ": " + line
			}
			return &SiteError{Step: "reload", Message: msg}
		}
		if time.Now().After(deadline) {
			return &SiteError{Step: "reload", Message: fmt.Sprintf("nginx did not serve generation %s within %s", gen, s.opts.ConfirmTimeout)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stillAccepting reports whether one of the old workers still accepts connections.
func stillAccepting(p *process, old []int) bool {
	if len(old) == 0 {
		return false
	}
	current := map[int]bool{}
	for _, pid := range p.workers() {
		current[pid] = true
	}
	for _, pid := range old {
		if current[pid] {
			return true
		}
	}
	return false
}

// Watch restarts nginx with the live tree when its master dies, until ctx ends.
func (s *Server) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.proc != nil && !s.proc.alive() && s.liveGen != "" {
			s.log.Error("nginx exited unexpectedly; starting it again", "generation", s.liveGen)
			if err := s.load(ctx, s.liveGen, false); err != nil {
				s.log.Error("restart nginx", "err", err)
			}
		}
		s.mu.Unlock()
	}
}

// Stop shuts nginx down gracefully (SIGQUIT: workers finish their requests), then forcibly
// after timeout.
func (s *Server) Stop(timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		if p := adopt(s.pidFile(), s.opts.Dir); p != nil {
			s.proc = p
		} else {
			return nil
		}
	}
	return s.proc.stop(timeout)
}

// Drift reports, per site of ids, why nginx does not serve it as it was loaded: it is not in
// the live tree, nginx is not running, or a file of the current generation changed on disk (a
// hand edit nginx would pick up on its next reload). Such sites are rewritten by the next
// Apply. While an apply holds the server, the previous answer is returned rather than waiting.
func (s *Server) Drift(ids []string) map[string]string {
	if !s.mu.TryLock() {
		return s.lastDrift
	}
	defer s.mu.Unlock()
	out := map[string]string{}
	for _, id := range ids {
		if _, ok := s.live[id]; !ok {
			out[id] = "nginx does not serve it"
		}
	}
	if s.liveGen != "" {
		running := s.proc != nil && s.proc.alive()
		dir := filepath.Join(s.opts.Dir, "gen", s.liveGen, "sites")
		for id, site := range s.live {
			if !running {
				out[id] = "nginx is not running"
				continue
			}
			for _, name := range site.fileNames() {
				got, err := os.ReadFile(filepath.Join(dir, id, name))
				if err != nil {
					out[id] = "rendered file " + name + " is missing"
					break
				}
				if !bytes.Equal(got, site.Files[name]) {
					out[id] = "rendered file " + name + " was changed on disk"
					break
				}
			}
		}
	}
	for id, why := range out {
		if _, ok := s.live[id]; ok {
			if s.tampered == nil {
				s.tampered = map[string]string{}
			}
			s.tampered[id] = why
		}
	}
	s.lastDrift = out
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sameSites(a, b map[string]Site) bool {
	if len(a) != len(b) {
		return false
	}
	for id, site := range a {
		o, ok := b[id]
		if !ok || o.hash() != site.hash() {
			return false
		}
	}
	return true
}

func sortedSites(m map[string]Site) []Site {
	out := make([]Site, 0, len(m))
	for _, site := range m {
		out = append(out, site)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func sortedIDs(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// tryBind checks that a listen address can be bound now.
func tryBind(addr string) error {
	if strings.HasPrefix(addr, "unix:") {
		return nil
	}
	hostPort := addr
	if _, err := strconv.Atoi(addr); err == nil {
		hostPort = ":" + addr
	} else if strings.HasPrefix(addr, "*:") {
		hostPort = addr[1:]
	}
	l, err := net.Listen("tcp", hostPort)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			return op.Err
		}
		return err
	}
	return l.Close()
}
