package agent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DefaultVersion is reported as agent_version when Config.Version is empty.
const DefaultVersion = "0.1.0"

// Config is everything an Agent needs. ServerAddr, APIBaseURL, StateDir and
// TransportCredentials are required; the rest has defaults.
type Config struct {
	// ServerAddr is the control plane's gRPC address (host:port, or any grpc.NewClient target).
	ServerAddr string
	// APIBaseURL is the control plane's REST base URL; snapshot paths are appended to it.
	APIBaseURL string
	// StateDir holds identity.json, credentials.json, the command journal and rendered config.
	// It is created with mode 0700.
	StateDir string
	// RegistrationToken is used only when StateDir holds no identity yet.
	RegistrationToken string
	// Name is the agent name asked for at registration.
	Name string
	// Version is reported to the server; DefaultVersion when empty.
	Version string
	// Hostname is reported to the server; os.Hostname() when empty.
	Hostname string
	// GatewayClass, when set, overrides the snapshot's gateway class for rendering.
	GatewayClass string
	// Render shapes rendered configuration (namespace, verifier URL).
	Render RenderOptions

	// DataPlane is what the agent does with a rendered publish: DataPlaneFiles (write it into
	// the state directory, for a gateway that reads it from there; the default) or
	// DataPlaneNginx (run an nginx and load it, see package agent/nginx).
	DataPlane string
	// Nginx configures the nginx data plane.
	Nginx NginxConfig
	// VerifyListen, when set, is the address the agent serves its credential verifier on for
	// the gateway's credential check (nginx auth_request, Envoy ext-auth). An nginx data plane
	// needs it and defaults it to 127.0.0.1:8081; Render.VerifierURL then defaults to it.
	VerifyListen string
	// MetricsListen, when set, is the address the agent serves Prometheus /metrics on (applies,
	// nginx reload time, verifier decisions by reason); off when empty.
	MetricsListen string
	// BatchWindow is how long the nginx data plane waits after a command for more to arrive,
	// so that a burst costs one reload (20 ms when zero).
	BatchWindow time.Duration
	// CounterFlushInterval is how often the verifier's counts are written to the state
	// directory (1 s when zero).
	CounterFlushInterval time.Duration

	// TransportCredentials secure the gRPC connection. There is deliberately no default: a
	// caller that wants plaintext must pass insecure.NewCredentials() and own that choice.
	TransportCredentials credentials.TransportCredentials
	// DialOptions are added to the gRPC client (tests add a bufconn dialer, for instance).
	DialOptions []grpc.DialOption
	// HTTPClient fetches snapshots; it carries the TLS settings for APIBaseURL. A client with
	// a 60 s timeout when nil.
	HTTPClient *http.Client
	// Logger receives structured logs; slog.Default() when nil.
	Logger *slog.Logger

	// DefaultHeartbeatInterval applies when the server does not set one (10 s when zero).
	DefaultHeartbeatInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect backoff (DefaultMinBackoff and
	// DefaultMaxBackoff when zero).
	MinBackoff, MaxBackoff time.Duration
}

// The reconnect backoff of an agent that does not set one. The server's fleet benchmark uses
// the same values, so its connect storm is the one real agents make.
const (
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// Data planes.
const (
	DataPlaneFiles = "files"
	DataPlaneNginx = "nginx"
)

// NginxConfig configures the nginx an agent with DataPlaneNginx runs.
type NginxConfig struct {
	// Binary is the nginx executable (nginx from PATH, else /usr/sbin/nginx).
	Binary string
	// Dir is nginx's prefix directory (<StateDir>/nginx when empty).
	Dir string
	// Listen maps a gateway listener port to the address nginx listens on for it
	// (80 -> "127.0.0.1:8080"); every mapped address always has a default server (404).
	Listen map[int]string
	// WorkerProcesses is worker_processes ("auto" when empty).
	WorkerProcesses string
	// HeadersMore is "auto" (load Debian's headers-more module when it is installed, to clear
	// every client-sent X-Imprun-* header), "off", or the module's path.
	HeadersMore string
	// StopOnExit stops nginx when Run returns. By default nginx keeps serving the last applied
	// configuration when the agent stops, and the next agent adopts it.
	StopOnExit bool
	// ConfirmTimeout bounds the wait for a reload to take (10 s when zero).
	ConfirmTimeout time.Duration
	// CertDir holds the certificate files TLS listeners name (<ref>.crt, <ref>.key); <Dir>/certs
	// when empty.
	CertDir string
}

// validateAndDefault checks the config, with the data plane's defaults that the checks depend
// on (the nginx directory, the verifier's address), then fills the rest (applyDefaults).
func (c *Config) validateAndDefault() error {
	var errs []error
	switch c.DataPlane {
	case "":
		c.DataPlane = DataPlaneFiles
	case DataPlaneFiles, DataPlaneNginx:
	default:
		errs = append(errs, fmt.Errorf("data plane %q is not one of files, nginx", c.DataPlane))
	}
	if c.DataPlane == DataPlaneNginx {
		if c.GatewayClass != "" && c.GatewayClass != GatewayClassNginx {
			errs = append(errs, fmt.Errorf("gateway class %q cannot be served by an nginx data plane", c.GatewayClass))
		}
		if c.VerifyListen == "" {
			c.VerifyListen = "127.0.0.1:8081"
		}
		if c.Nginx.Dir == "" && c.StateDir != "" {
			c.Nginx.Dir = filepath.Join(c.StateDir, "nginx")
		}
		for port, addr := range c.Nginx.Listen {
			if port < 1 || port > 65535 || addr == "" {
				errs = append(errs, fmt.Errorf("nginx listen mapping %d=%q is not valid", port, addr))
			}
		}
	}
	// The nginx on this host calls the verifier on this host; an Envoy Gateway reaches the
	// agent through its Service (the Envoy renderer's default), not through this address.
	if c.DataPlane == DataPlaneNginx && c.Render.VerifierURL == "" {
		host, port, err := net.SplitHostPort(c.VerifyListen)
		if err != nil {
			errs = append(errs, fmt.Errorf("verify listen address %q: %w", c.VerifyListen, err))
		} else {
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "127.0.0.1"
			}
			c.Render.VerifierURL = "http://" + net.JoinHostPort(host, port) + "/verify"
		}
	}
	if c.ServerAddr == "" {
		errs = append(errs, errors.New("server address is required"))
	}
	if c.APIBaseURL == "" {
		errs = append(errs, errors.New("API base URL is required"))
	} else if u, err := url.Parse(c.APIBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("API base URL %q must be an absolute http(s) URL", c.APIBaseURL))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state directory is required"))
	}
	if c.TransportCredentials == nil {
		errs = append(errs, errors.New("transport credentials are required (TLS, or explicitly insecure for loopback development)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	c.applyDefaults()
	return nil
}

// applyDefaults fills what a valid config leaves unset: timings, the logger, the HTTP client,
// and the renderer's nginx settings from the data plane's.
func (c *Config) applyDefaults() {
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient(nil)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DefaultHeartbeatInterval <= 0 {
		c.DefaultHeartbeatInterval = 10 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.BatchWindow <= 0 {
		c.BatchWindow = 20 * time.Millisecond
	}
	if c.CounterFlushInterval <= 0 {
		c.CounterFlushInterval = time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	c.Render = c.Render.withDefaults()
	if c.DataPlane == DataPlaneNginx && c.Render.NginxListen == nil {
		c.Render.NginxListen = c.Nginx.Listen
	}
	if c.DataPlane == DataPlaneNginx && c.Render.NginxCertDir == "" && c.Nginx.CertDir != "" {
		c.Render.NginxCertDir = c.Nginx.CertDir
	}
	if c.DataPlane == DataPlaneNginx && c.Render.NginxCertDir == "" && c.Nginx.Dir != "" {
		if abs, err := filepath.Abs(filepath.Join(c.Nginx.Dir, "certs")); err == nil {
			c.Render.NginxCertDir = abs
		}
	}
}

// NewHTTPClient is the client an agent fetches snapshots with, over TLS with tlsConfig (nil for
// Go's defaults). It keeps as many connections to the API alive as deploys fetch at once: with
// Go's default of two, a burst of publishes closed a connection after most fetches and opened
// (and, over TLS, handshook) a new one for the next.
func NewHTTPClient(tlsConfig *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxConcurrentDeploys
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: tr}
}
