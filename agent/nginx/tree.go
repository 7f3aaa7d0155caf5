package nginx

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Listen is one listening socket a site needs, as the listen directive names it.
type Listen struct {
	// Addr is "host:port", "[v6]:port" or "port".
	Addr string `json:"addr"`
	// SSL is true for a TLS listener.
	SSL bool `json:"ssl,omitempty"`
}

// Site is one unit of configuration that nginx accepts or refuses on its own: a publish.
type Site struct {
	// ID names the site's directory; it must be a safe path segment.
	ID string
	// Files are included inside http {} in name order (name -> content).
	Files map[string][]byte
	// Listens are the sockets the site's servers listen on.
	Listens []Listen
}

// hash is the site's content hash: two equal hashes mean nothing to reload.
func (s Site) hash() string {
	h := sha256.New()
	for _, name := range s.fileNames() {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(s.Files[name]))
		h.Write(s.Files[name])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s Site) fileNames() []string {
	names := make([]string, 0, len(s.Files))
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// safeSegment accepts the ids and file names used as path segments.
var safeSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (s Site) validate() error {
	if !safeSegment.MatchString(s.ID) || strings.Contains(s.ID, "..") {
		return fmt.Errorf("site id %q is not a safe directory name", s.ID)
	}
	for name := range s.Files {
		if !safeSegment.MatchString(name) || strings.Contains(name, "..") {
			return fmt.Errorf("site %s: file name %q is not safe", s.ID, name)
		}
	}
	for _, l := range s.Listens {
		if l.Addr == "" || strings.ContainsAny(l.Addr, " ;{}\"'\n\t") {
			return fmt.Errorf("site %s: listen address %q is not valid", s.ID, l.Addr)
		}
	}
	return nil
}

// mainConfig renders the main nginx.conf of a generation: process settings, a default server
// (404, or a refused TLS handshake) on every socket so that a request for a host no site serves
// never reaches a site's server, the status server that names the generation, and one include
// per site file, relative to the generation directory.
func (s *Server) mainConfig(gen string, sites []Site) []byte {
	o := s.opts
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by imprun-agent (generation %s). Do not edit: the agent rewrites it on every apply.\n", gen)
	if o.HeadersMoreModule != "" {
		fmt.Fprintf(&b, "load_module %s;\n", o.HeadersMoreModule)
	}
	fmt.Fprintf(&b, "pid %s;\n", s.pidFile())
	fmt.Fprintf(&b, "error_log %s notice;\n", s.errorLog())
	fmt.Fprintf(&b, "worker_processes %s;\n", o.WorkerProcesses)
	b.WriteString("worker_shutdown_timeout 30s;\n")
	fmt.Fprintf(&b, "events {\n    worker_connections %d;\n}\n", o.WorkerConnections)
	b.WriteString("http {\n")
	tmp := filepath.Join(o.Dir, "tmp")
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", kind, filepath.Join(tmp, kind))
	}
	fmt.Fprintf(&b, "    access_log %s;\n", filepath.Join(o.Dir, "logs", "access.log"))
	b.WriteString("    server_tokens off;\n")
	b.WriteString("    default_type application/octet-stream;\n")
	// An API gateway streams: no request or response bodies in temporary files (which nginx's
	// unprivileged workers may not be allowed to write).
	b.WriteString("    proxy_request_buffering off;\n    proxy_max_temp_file_size 0;\n")
	b.WriteString("    proxy_http_version 1.1;\n")
	// Room for thousands of hosts and variables without nginx searching for a hash size on
	// every load (and warning that it found none).
	b.WriteString("    map_hash_bucket_size 128;\n    server_names_hash_bucket_size 128;\n    server_names_hash_max_size 8192;\n")
	b.WriteString("    variables_hash_bucket_size 128;\n    variables_hash_max_size 2048;\n")
	if o.HeadersMoreModule != "" {
		// Whatever a client sends in the X-Imprun- namespace never reaches a backend: the
		// gateway sets those headers itself after the credential check.
		b.WriteString("    more_clear_input_headers \"X-Imprun-*\";\n")
	}

	// Sockets: a default server each. The status server listens on a unix socket only the
	// agent's user can reach.
	sockets := map[string]bool{} // addr -> ssl
	for _, l := range o.Listens {
		sockets[l.Addr] = sockets[l.Addr] || l.SSL
	}
	for _, site := range sites {
		for _, l := range site.Listens {
			sockets[l.Addr] = sockets[l.Addr] || l.SSL
		}
	}
	addrs := make([]string, 0, len(sockets))
	for a := range sockets {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		if sockets[a] {
			fmt.Fprintf(&b, "    server {\n        listen %s ssl default_server;\n        ssl_reject_handshake on;\n    }\n", a)
			continue
		}
		fmt.Fprintf(&b, "    server {\n        listen %s default_server;\n        default_type application/json;\n        return 404 '{\"error\":\"no_route\",\"detail\":\"no API is published on this host\"}\\n';\n    }\n", a)
	}
	fmt.Fprintf(&b, "    server {\n        listen unix:%s;\n        access_log off;\n        location = /imprun/generation {\n            return 200 \"%s\";\n        }\n        location / {\n            return 404;\n        }\n    }\n", s.statusSocket(), gen)
	for _, site := range sites {
		for _, name := range site.fileNames() {
			fmt.Fprintf(&b, "    include sites/%s/%s;\n", site.ID, name)
		}
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// writeGeneration writes a whole generation directory and returns its path.
func (s *Server) writeGeneration(gen string, sites []Site) (string, error) {
	dir := filepath.Join(s.opts.Dir, "gen", gen)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	for _, site := range sites {
		sd := filepath.Join(dir, "sites", site.ID)
		if err := os.MkdirAll(sd, 0o755); err != nil {
			return "", err
		}
		for name, data := range site.Files {
			if err := os.WriteFile(filepath.Join(sd, name), data, 0o644); err != nil {
				return "", err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	manifest := make([]manifestEntry, 0, len(sites))
	for _, site := range sites {
		manifest = append(manifest, manifestEntry{ID: site.ID, Files: site.fileNames(), Listens: site.Listens})
	}
	data, err := json.Marshal(manifest)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, manifestFile), data, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), s.mainConfig(gen, sites), 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// swapCurrent points the current symlink at gen atomically (a new link renamed over the old).
func (s *Server) swapCurrent(gen string) error {
	link := filepath.Join(s.opts.Dir, "current")
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join("gen", gen), tmp); err != nil {
		return fmt.Errorf("swap to generation %s: %w", gen, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("swap to generation %s: %w", gen, err)
	}
	return nil
}

// currentGeneration reads the generation the current symlink names ("" when there is none).
func (s *Server) currentGeneration() string {
	target, err := os.Readlink(filepath.Join(s.opts.Dir, "current"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// pruneGenerations removes every generation but keep.
func (s *Server) pruneGenerations(keep ...string) {
	entries, err := os.ReadDir(filepath.Join(s.opts.Dir, "gen"))
	if err != nil {
		return
	}
	for _, e := range entries {
		keepIt := false
		for _, k := range keep {
			keepIt = keepIt || e.Name() == k
		}
		if !keepIt {
			_ = os.RemoveAll(filepath.Join(s.opts.Dir, "gen", e.Name()))
		}
	}
}

// manifestFile lists a generation's sites, so that a restarted agent knows what a running nginx
// serves without parsing nginx configuration.
const manifestFile = "manifest.json"

type manifestEntry struct {
	ID      string   `json:"id"`
	Files   []string `json:"files"`
	Listens []Listen `json:"listens"`
}

// readSites reads the sites of a generation back from disk (used to adopt a running nginx).
func (s *Server) readSites(gen string) (map[string]Site, error) {
	dir := filepath.Join(s.opts.Dir, "gen", gen)
	data, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, err
	}
	var manifest []manifestEntry
	if err := json.Unmarshal(data, &manifest); err != nil {
		return nil, fmt.Errorf("decode %s: %w", manifestFile, err)
	}
	out := map[string]Site{}
	for _, m := range manifest {
		site := Site{ID: m.ID, Files: map[string][]byte{}, Listens: m.Listens}
		for _, name := range m.Files {
			b, err := os.ReadFile(filepath.Join(dir, "sites", m.ID, name))
			if err != nil {
				return nil, err
			}
			site.Files[name] = b
		}
		out[site.ID] = site
	}
	return out, nil
}
