package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/imprun/imprun-server/egress"
)

// Gateway classes the agent can render for.
const (
	GatewayClassEnvoy = "envoy-gateway"
	GatewayClassNginx = "nginx"
)

// RenderOptions are the agent-side settings that shape rendered configuration but do not come
// from the snapshot.
type RenderOptions struct {
	// Namespace is the Kubernetes namespace of rendered resources (Envoy Gateway).
	Namespace string
	// VerifierURL is where the gateway asks whether a presented credential may pass (Envoy
	// Gateway ext-auth or nginx auth_request), used when a publish's auth_mode needs
	// credentials. The gateway appends "/<publish_id>" to it. The default is the agent's
	// in-cluster Service for Envoy Gateway and the agent on the same host for nginx (nginx
	// resolves a proxy_pass host name when it loads its configuration, and refuses to load
	// when it cannot).
	VerifierURL string
	// NginxListen maps a gateway listener port (as the publish's template names it) to the
	// address nginx listens on for it ("127.0.0.1:8080"); unmapped ports listen as they are.
	NginxListen map[int]string
	// Egress is what this agent allows as backend endpoints beyond the default egress policy
	// (package egress); the server checks the cluster's policy first, the renderers check
	// the agent's again.
	Egress egress.Policy
	// NginxCertDir is where nginx finds the certificate files a TLS listener's certificate_ref
	// names (<ref>.crt and <ref>.key); relative to the including file when empty.
	NginxCertDir string
	// NginxTrustedCA is the CA bundle nginx verifies https backends against (default: the
	// Debian system bundle).
	NginxTrustedCA string
}

// Default verifier URLs (the agent's -verify-listen default port).
const (
	defaultEnvoyVerifierURL = "http://imprun-agent.imprun-system.svc.cluster.local:8081/verify"
	defaultNginxVerifierURL = "http://127.0.0.1:8081/verify"
)

func (o RenderOptions) withDefaults() RenderOptions {
	if o.Namespace == "" {
		o.Namespace = "imprun-gateway"
	}
	// VerifierURL has a default per gateway class, set by RendererFor: a default filled in
	// here would be the wrong class's for the other.
	if o.NginxTrustedCA == "" {
		o.NginxTrustedCA = "/etc/ssl/certs/ca-certificates.crt"
	}
	return o
}

// RenderedResource is one resource in a rendered configuration. Hash is the SHA-256 of its
// rendered text, which is how a later revision tells created, updated and unchanged apart.
type RenderedResource struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Hash      string `json:"hash"`
}

// key identifies a resource across revisions.
func (r RenderedResource) key() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// Rendered is the configuration for one publish revision.
type Rendered struct {
	// FileExt is the extension of the configuration file ("yaml" or "conf").
	FileExt   string
	Config    []byte
	Resources []RenderedResource
	// Listens are the sockets an nginx configuration listens on (nginx only).
	Listens []ListenSocket
}

// ListenSocket is one socket of a rendered nginx configuration.
type ListenSocket struct {
	Addr string // as the listen directive names it: "127.0.0.1:8080" or "80"
	SSL  bool
}

// Renderer turns snapshots and credential sets into configuration for one gateway class.
type Renderer interface {
	// RenderPublish renders one publish revision.
	RenderPublish(s *Snapshot) (*Rendered, error)
	// RenderCredentials renders the credentials that hold a grant for publishID (hashes only),
	// in a form the gateway's credential check can mount next to the publish config.
	RenderCredentials(publishID string, creds []Credential) (fileName string, data []byte, err error)
}

// RendererFor returns the renderer of a gateway class.
func RendererFor(gatewayClass string, opts RenderOptions) (Renderer, error) {
	switch gatewayClass {
	case GatewayClassEnvoy, "envoy", "eg":
		if opts.VerifierURL == "" {
			opts.VerifierURL = defaultEnvoyVerifierURL
		}
		return envoyRenderer{opts: opts.withDefaults()}, nil
	case GatewayClassNginx:
		if opts.VerifierURL == "" {
			opts.VerifierURL = defaultNginxVerifierURL
		}
		return nginxRenderer{opts: opts.withDefaults()}, nil
	default:
		return nil, fmt.Errorf("unsupported gateway class %q", gatewayClass)
	}
}

// dnsName builds a Kubernetes object name (RFC 1123 label) from parts. Names from the snapshot
// are user input, so they are lowercased and stripped of anything a label cannot hold; a name
// too long for a label keeps a hash of the full text so two long names do not collide.
func dnsName(parts ...string) string {
	var b strings.Builder
	lastDash := true // no leading dash
	for _, p := range parts {
		if p == "" {
			continue
		}
		if !lastDash {
			b.WriteByte('-')
			lastDash = true
		}
		for _, r := range strings.ToLower(p) {
			if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
				b.WriteRune(r)
				lastDash = false
			} else if !lastDash {
				b.WriteByte('-')
				lastDash = true
			}
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 63 {
		sum := sha256.Sum256([]byte(name))
		name = strings.TrimRight(name[:54], "-") + "-" + hex.EncodeToString(sum[:])[:8]
	}
	if name == "" {
		name = "x"
	}
	return name
}

// nginxName builds an nginx identifier (upstream or zone name): like dnsName with underscores.
func nginxName(parts ...string) string {
	return strings.ReplaceAll(dnsName(parts...), "-", "_")
}

// shortID is the first 8 characters of an id, used to keep names of different publishes apart
// without making them unreadable.
func shortID(id string) string {
	s := strings.ToLower(strings.ReplaceAll(id, "-", ""))
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

func hashText(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// resolveBackend finds the backend a route refers to, by id first and by name second (older
// snapshots may carry only names).
func resolveBackend(svc APIService, ref BackendRef) (Backend, error) {
	for _, b := range svc.Backends {
		if ref.BackendID != "" && b.ID == ref.BackendID {
			return b, nil
		}
	}
	for _, b := range svc.Backends {
		if ref.BackendID == "" && ref.BackendName != "" && b.Name == ref.BackendName {
			return b, nil
		}
	}
	return Backend{}, fmt.Errorf("service %s references unknown backend %q", svc.Name, firstNonEmpty(ref.BackendID, ref.BackendName))
}

// routeHostnames are the hostnames a route answers on: its own, else the publish's.
func routeHostnames(s *Snapshot, r Route) []string {
	if len(r.Hostnames) > 0 {
		return r.Hostnames
	}
	if s.Hostname != "" {
		return []string{s.Hostname}
	}
	return nil
}

// needsCredentialCheck reports whether the publish's auth mode makes the gateway ask the
// verifier about every request.
func needsCredentialCheck(s *Snapshot) bool {
	switch s.AuthMode {
	case "api-key", "apikey", "api_key", "oauth2":
		return true
	}
	return false
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// checkEgress refuses a backend endpoint the egress policy does not allow.
func checkEgress(p egress.Policy, svc APIService, b Backend) error {
	for _, ep := range b.Endpoints {
		if err := p.Check(ep.Host); err != nil {
			return fmt.Errorf("service %s backend %s: %w", svc.Name, b.Name, err)
		}
	}
	return nil
}
