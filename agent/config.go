package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
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
	// MinBackoff and MaxBackoff bound the reconnect backoff (0.5 s and 30 s when zero).
	MinBackoff, MaxBackoff time.Duration
}

func (c *Config) validateAndDefault() error {
	var errs []error
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
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DefaultHeartbeatInterval <= 0 {
		c.DefaultHeartbeatInterval = 10 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	c.Render = c.Render.withDefaults()
	return nil
}
