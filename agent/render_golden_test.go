package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The golden tests render whole snapshots and compare the output byte for byte with the files
// under testdata/golden/<case>/: <class>.yaml or <class>.conf (the configuration) and
// <class>.resources (the resource list the agent reports, with hashes). Every rendered nginx
// configuration must also pass `nginx -t`.
//
// After an intended change of the renderers, rewrite the goldens and review the diff:
//
//	go test ./agent -run TestRenderGolden -update
//
// The server-* snapshots are bytes that store.BuildSnapshot produced for a real catalog (made
// through the provider REST API on the test harness: routes with several paths, weighted
// backends with timeouts, health checks, circuit breakers, retries, TLS and consistent
// hashing, and policies of every type on all three scopes, one disabled). Rebuild them the
// same way when the server's snapshot shape changes; TestServerSnapshotShape fails when the
// agent stops understanding a field of them (store.TestSnapshotSharedShape checks the shape
// against a snapshot built live).
var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden with the current rendering")

// goldenCases are the snapshots rendered for every gateway class.
var goldenCases = []struct {
	name  string
	input string // path of the snapshot
}{
	// The hand-written sample of the other render tests: HTTP and HTTPS listeners, api-key.
	{"sample", "testdata/snapshot.json"},
	// Built by the server: envoy-gateway template, HTTP + HTTPS, api-key.
	{"server-envoy-apikey", "testdata/golden/server-envoy-apikey/snapshot.json"},
	// Built by the server: nginx template with one HTTPS listener bound to a hostname, oauth2.
	{"server-nginx-oauth2", "testdata/golden/server-nginx-oauth2/snapshot.json"},
	// Hand-written: the least a publish can be (no auth, no policies, an exact path).
	{"minimal", "testdata/golden/minimal/snapshot.json"},
}

// goldenRevision stands in for the revision the DeployCommand carries: the server's snapshot
// has none.
const goldenRevision = 4

func TestRenderGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range goldenCases {
		for _, class := range []string{GatewayClassEnvoy, GatewayClassNginx} {
			t.Run(tc.name+"/"+class, func(t *testing.T) {
				t.Parallel()
				data, err := os.ReadFile(tc.input)
				require.NoError(t, err)
				s, err := DecodeSnapshot(data)
				require.NoError(t, err)
				if s.Revision == 0 {
					s.Revision = goldenRevision
				}
				r, err := RendererFor(class, RenderOptions{})
				require.NoError(t, err)
				out, err := r.RenderPublish(s)
				require.NoError(t, err)

				dir := filepath.Join("testdata", "golden", tc.name)
				compareGolden(t, filepath.Join(dir, class+"."+out.FileExt), out.Config)
				var res bytes.Buffer
				for _, rr := range out.Resources {
					fmt.Fprintf(&res, "%s %s %s %s\n", rr.Kind, firstNonEmpty(rr.Namespace, "-"), rr.Name, rr.Hash)
				}
				compareGolden(t, filepath.Join(dir, class+".resources"), res.Bytes())

				switch class {
				case GatewayClassEnvoy:
					require.Len(t, yamlDocs(t, out.Config), len(out.Resources), "one YAML document per resource")
				case GatewayClassNginx:
					nginxCheck(t, out.Config, certificateRefs(s)...)
				}
			})
		}
	}
}

// TestServerSnapshotShape decodes the server-built snapshots strictly: a field the server sends
// that the agent does not model (a renamed or new one) fails here instead of being dropped.
func TestServerSnapshotShape(t *testing.T) {
	t.Parallel()
	for _, tc := range goldenCases {
		if !strings.HasPrefix(tc.name, "server-") {
			continue
		}
		data, err := os.ReadFile(tc.input)
		require.NoError(t, err)
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		var s Snapshot
		require.NoError(t, dec.Decode(&s), "%s: the agent's Snapshot does not model every field the server sends", tc.input)
		require.Zero(t, s.Revision, "%s: the server's snapshot carries no revision (a rollback keeps the checksum)", tc.input)
		var withPolicies int
		for _, svc := range s.APIServices {
			for _, r := range svc.Routes {
				if len(r.Policies) > 0 {
					withPolicies++
				}
			}
		}
		require.NotZero(t, withPolicies, "%s: the server resolves policies per route", tc.input)
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		t.Fatalf("golden file %s is missing: run go test ./agent -run TestRenderGolden -update and review it", path)
	}
	require.NoError(t, err)
	if bytes.Equal(want, got) {
		return
	}
	wl, gl := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	line := 0
	for line < len(wl) && line < len(gl) && wl[line] == gl[line] {
		line++
	}
	at := func(ls []string) string {
		if line < len(ls) {
			return ls[line]
		}
		return "<end of file>"
	}
	t.Errorf("%s differs from the rendering from line %d on:\n  golden:   %q\n  rendered: %q\nrendered in full:\n%s\n"+
		"If the change is intended, run go test ./agent -run TestRenderGolden -update and review the diff.",
		path, line+1, at(wl), at(gl), got)
}

func certificateRefs(s *Snapshot) []string {
	var refs []string
	for _, l := range s.Gateway.Listeners {
		if l.TLS != nil && l.TLS.CertificateRef != "" {
			refs = append(refs, l.TLS.CertificateRef)
		}
	}
	return refs
}

// nginxBinary finds nginx, failing (not skipping) the test when it is not installed: the
// project's own scripts/tools.sh installs it, so a machine without it is set up wrong.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Fatal("nginx is not installed (neither in PATH nor /usr/sbin/nginx): run scripts/tools.sh, which installs " +
		"Debian's nginx package; the agent's tests run `nginx -t` on every rendered nginx configuration")
	return ""
}

// nginxCheck runs `nginx -t` on rendered configuration (a fragment for inside http {}, as the
// agent writes it) in a throwaway prefix: a minimal nginx.conf that includes the fragment, with
// pid, logs and temp paths in a temp dir so it runs as root or not without touching /etc or
// /var, and a self-signed certificate under each name the listeners refer to (the operator
// provisions those next to the configuration). Extra fragments (credential files) are included
// after it.
func nginxCheck(t *testing.T, config []byte, certRefs ...string) {
	t.Helper()
	nginxCheckFiles(t, map[string][]byte{"publish.conf": config}, certRefs...)
}

func nginxCheckFiles(t *testing.T, fragments map[string][]byte, certRefs ...string) {
	t.Helper()
	bin := nginxBinary(t)
	dir := t.TempDir()
	var includes strings.Builder
	for name, data := range fragments {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
		fmt.Fprintf(&includes, "    include %s;\n", filepath.Join(dir, name))
	}
	crt, key := selfSignedPEM(t)
	for _, ref := range certRefs {
		require.NoError(t, os.WriteFile(filepath.Join(dir, ref+".crt"), crt, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, ref+".key"), key, 0o600))
	}
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s}
`, dir, includes.String())
	confPath := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o600))
	out, err := exec.Command(bin, "-t", "-q", "-c", confPath, "-p", dir+"/").CombinedOutput()
	if err != nil {
		var numbered strings.Builder
		for name, data := range fragments {
			fmt.Fprintf(&numbered, "--- %s\n", name)
			for i, l := range strings.Split(string(data), "\n") {
				fmt.Fprintf(&numbered, "%4d  %s\n", i+1, l)
			}
		}
		t.Errorf("nginx -t refuses the rendered configuration: %v\n%s\n%s", err, out, numbered.String())
	}
}

var selfSigned struct {
	once     sync.Once
	crt, key []byte
	err      error
}

// selfSignedPEM is one throwaway certificate and key for every nginx -t of the test binary.
func selfSignedPEM(t *testing.T) (crt, key []byte) {
	t.Helper()
	selfSigned.once.Do(func() {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			selfSigned.err = err
			return
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imprun-agent-test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			selfSigned.err = err
			return
		}
		kd, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			selfSigned.err = err
			return
		}
		selfSigned.crt = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		selfSigned.key = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	})
	require.NoError(t, selfSigned.err)
	return selfSigned.crt, selfSigned.key
}
