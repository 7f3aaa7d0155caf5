// Package config holds the one configuration struct of every imprun process, loaded once by
// viper from an optional YAML file and IMPRUN_* environment variables, with defaults that make
// `make run` work and validation that names the bad key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/imprun/imprun-server/temporalclient"
)

// Config is the whole configuration. mapstructure tags are the keys used in the YAML file;
// the environment variable of a key is IMPRUN_ + the upper-cased key with dots as underscores
// (database.url -> IMPRUN_DATABASE_URL).
type Config struct {
	Log      Log      `mapstructure:"log"`
	HTTP     HTTP     `mapstructure:"http"`
	GRPC     GRPC     `mapstructure:"grpc"`
	Database Database `mapstructure:"database"`
	Temporal Temporal `mapstructure:"temporal"`
	OIDC     OIDC     `mapstructure:"oidc"`
	Agent    Agent    `mapstructure:"agent"`
	Worker   Worker   `mapstructure:"worker"`
	Workflow Workflow `mapstructure:"workflow"`
	Dev      Dev      `mapstructure:"dev"`
}

// Log configures log/slog.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// HTTP configures the REST listener of cmd/api.
type HTTP struct {
	Addr            string        `mapstructure:"addr"`
	BodyLimit       string        `mapstructure:"body_limit"` // Echo size syntax, e.g. 1M
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	ReadTimeout     time.Duration `mapstructure:"read_timeout"`
	WriteTimeout    time.Duration `mapstructure:"write_timeout"`
	// TrustedProxies lists the CIDR ranges (comma-separated) of proxies whose
	// X-Forwarded-For is believed; empty: nobody's.
	TrustedProxies string `mapstructure:"trusted_proxies"`
	// PprofAddr is where cmd/api serves net/http/pprof (/debug/pprof/) for profiling under
	// load; empty (the default) serves nothing. Bind it to loopback: profiles show internals.
	PprofAddr string `mapstructure:"pprof_addr"`
}

// Dev holds the settings that are only for development and must be switched on by name.
type Dev struct {
	// AllowInsecureTransport lets `api serve` run with an http:// OIDC issuer or plaintext
	// agent gRPC on a non-loopback address (a compose stack on one machine). Never in
	// production: tokens and agent JWTs would cross the network in the clear.
	AllowInsecureTransport bool `mapstructure:"allow_insecure_transport"`
}

// ServeSafety refuses the settings `api serve` must not run with outside development: an
// http:// OIDC issuer that is not on loopback, and plaintext agent gRPC listening beyond
// loopback, unless dev.allow_insecure_transport is on. It returns every problem, naming the key.
func (c *Config) ServeSafety() error {
	if c.Dev.AllowInsecureTransport {
		return nil
	}
	var errs []string
	if u, err := url.Parse(c.OIDC.IssuerURL); err == nil && u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		errs = append(errs, fmt.Sprintf("oidc.issuer_url %s is plain http on a non-loopback host: use https (or set dev.allow_insecure_transport for a development stack)", c.OIDC.IssuerURL))
	}
	if c.GRPC.TLSCertFile == "" {
		host, _, err := net.SplitHostPort(c.GRPC.Addr)
		if err != nil || !loopbackHost(host) {
			errs = append(errs, fmt.Sprintf("grpc.addr %s serves agents in plaintext beyond loopback: set grpc.tls_cert_file and grpc.tls_key_file (or dev.allow_insecure_transport for a development stack)", c.GRPC.Addr))
		}
	}
	if len(errs) > 0 {
		return errors.New("unsafe settings for api serve: " + strings.Join(errs, "; "))
	}
	return nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// GRPC configures the agent gateway listener of cmd/api.
type GRPC struct {
	Addr           string        `mapstructure:"addr"`
	TLSCertFile    string        `mapstructure:"tls_cert_file"`
	TLSKeyFile     string        `mapstructure:"tls_key_file"`
	MaxRecvMsgSize int           `mapstructure:"max_recv_msg_size"`
	MaxSendMsgSize int           `mapstructure:"max_send_msg_size"`
	KeepaliveMin   time.Duration `mapstructure:"keepalive_min_time"`
}

// Database configures PostgreSQL.
type Database struct {
	URL          string        `mapstructure:"url"`
	MaxOpenConns int           `mapstructure:"max_open_conns"`
	MaxIdleConns int           `mapstructure:"max_idle_conns"`
	ConnectRetry time.Duration `mapstructure:"connect_retry"` // how long to keep retrying at start
}

// Temporal configures the Temporal client.
type Temporal struct {
	HostPort     string        `mapstructure:"host_port"`
	Namespace    string        `mapstructure:"namespace"`
	TaskQueue    string        `mapstructure:"task_queue"`
	ConnectRetry time.Duration `mapstructure:"connect_retry"`
	// GRPCCompression is the compression of the requests to Temporal: none or gzip.
	GRPCCompression string `mapstructure:"grpc_compression"`
}

// OIDC configures the verification of people's bearer tokens.
type OIDC struct {
	IssuerURL      string `mapstructure:"issuer_url"`
	Audience       string `mapstructure:"audience"`
	RolesClaim     string `mapstructure:"roles_claim"` // dotted path, e.g. realm_access.roles
	EmailClaim     string `mapstructure:"email_claim"`
	DevIssuerAddr  string `mapstructure:"dev_issuer_addr"`  // where `api dev-issuer` listens
	DevIssuerState string `mapstructure:"dev_issuer_state"` // key file of the dev issuer
}

// Agent configures agent authentication and presence.
type Agent struct {
	JWTSecret             string        `mapstructure:"jwt_secret"`
	JWTTTL                time.Duration `mapstructure:"jwt_ttl"`
	HeartbeatInterval     time.Duration `mapstructure:"heartbeat_interval"`
	MissedHeartbeats      int           `mapstructure:"missed_heartbeats"`
	RegistrationTokenTTL  time.Duration `mapstructure:"registration_token_ttl"`
	PresenceFlushInterval time.Duration `mapstructure:"presence_flush_interval"`
	// ConnectSlots is how many agent connects do their database work at once (0: half of
	// database.max_open_conns, see AgentConnectSlots); ConnectQueue how many more may wait.
	ConnectSlots int `mapstructure:"connect_slots"`
	ConnectQueue int `mapstructure:"connect_queue"`
}

// AgentConnectSlots is agent.connect_slots, or half of the pool when it is 0: the other half
// stays free for the writes of agents already connected while a storm of connects comes in.
func (c *Config) AgentConnectSlots() int {
	if c.Agent.ConnectSlots > 0 {
		return c.Agent.ConnectSlots
	}
	return max(1, c.Database.MaxOpenConns/2)
}

// Worker configures cmd/worker.
type Worker struct {
	HTTPAddr string `mapstructure:"http_addr"` // /healthz and /metrics
}

// Workflow holds the defaults of the long-running processes.
type Workflow struct {
	PublishDeadline  time.Duration `mapstructure:"publish_deadline"`
	ApprovalDeadline time.Duration `mapstructure:"approval_deadline"`
}

// defaults returns the values that make local use work with `make run`.
func defaults() map[string]any {
	return map[string]any{
		"log.level":                     "info",
		"log.format":                    "text",
		"http.addr":                     "127.0.0.1:8080",
		"http.body_limit":               "1M",
		"http.pprof_addr":               "",
		"http.shutdown_timeout":         "20s",
		"http.read_timeout":             "30s",
		"http.write_timeout":            "60s",
		"http.trusted_proxies":          "",
		"grpc.addr":                     "127.0.0.1:9090",
		"grpc.tls_cert_file":            "",
		"grpc.tls_key_file":             "",
		"grpc.max_recv_msg_size":        4 << 20,
		"grpc.max_send_msg_size":        4 << 20,
		"grpc.keepalive_min_time":       "5s",
		"database.url":                  "postgres://postgres@127.0.0.1:55432/imprun?sslmode=disable",
		"database.max_open_conns":       20,
		"database.max_idle_conns":       20,
		"database.connect_retry":        "60s",
		"temporal.host_port":            "127.0.0.1:7233",
		"temporal.namespace":            "default",
		"temporal.task_queue":           "imprun",
		"temporal.connect_retry":        "60s",
		"temporal.grpc_compression":     "none",
		"oidc.issuer_url":               "http://127.0.0.1:9998/oidc",
		"dev.allow_insecure_transport":  false,
		"oidc.audience":                 "imprun-server",
		"oidc.roles_claim":              "realm_access.roles",
		"oidc.email_claim":              "email",
		"oidc.dev_issuer_addr":          "127.0.0.1:9998",
		"oidc.dev_issuer_state":         ".data/dev-issuer.json",
		"agent.jwt_secret":              "",
		"agent.jwt_ttl":                 "1h",
		"agent.heartbeat_interval":      "10s",
		"agent.missed_heartbeats":       3,
		"agent.registration_token_ttl":  "30m",
		"agent.presence_flush_interval": "2s",
		"agent.connect_slots":           0,
		"agent.connect_queue":           10000,
		"worker.http_addr":              "127.0.0.1:8081",
		"workflow.publish_deadline":     "24h",
		"workflow.approval_deadline":    "168h",
	}
}

// ConfigFileEnv names the variable that points at the YAML file when --config is not given.
const ConfigFileEnv = "IMPRUN_CONFIG"

// Load reads the configuration: defaults, then the YAML file at path (if path is not empty),
// then IMPRUN_* environment variables. Unknown keys in the file or environment and invalid
// values are errors that name the key.
func Load(path string) (*Config, error) {
	v := viper.New()
	for k, val := range defaults() {
		v.SetDefault(k, val)
	}
	known := map[string]bool{}
	for k := range defaults() {
		known[k] = true
	}
	if path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		// viper ignores keys it has no default for; an operator who misspells a key must hear it.
		for _, k := range v.AllKeys() {
			if !known[k] {
				return nil, fmt.Errorf("config file %s: unknown key %q", path, k)
			}
		}
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "IMPRUN_") || name == ConfigFileEnv || otherProgram(name) {
			continue
		}
		key, ok := envKey(name, known)
		if !ok {
			return nil, fmt.Errorf("environment: unknown variable %s", name)
		}
		if err := v.BindEnv(key, name); err != nil {
			return nil, fmt.Errorf("environment %s: %w", name, err)
		}
	}
	var c Config
	if err := v.UnmarshalExact(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// agentVariables are the environment of cmd/agent (see its doc comment). They share the
// IMPRUN_ prefix, so a shell that runs an agent and the api must not make the api refuse to start.
var agentVariables = map[string]bool{
	"IMPRUN_AGENT_SERVER": true, "IMPRUN_AGENT_API": true, "IMPRUN_AGENT_STATE_DIR": true,
	"IMPRUN_AGENT_REGISTRATION_TOKEN": true, "IMPRUN_AGENT_NAME": true, "IMPRUN_AGENT_CA_FILE": true,
	"IMPRUN_AGENT_GATEWAY_CLASS": true, "IMPRUN_AGENT_NAMESPACE": true, "IMPRUN_AGENT_VERIFY_LISTEN": true,
	"IMPRUN_AGENT_VERIFIER_URL": true, "IMPRUN_AGENT_LOG_LEVEL": true, "IMPRUN_AGENT_DATA_PLANE": true,
	"IMPRUN_AGENT_EGRESS_ALLOW": true,
}

// otherProgram reports whether an IMPRUN_ variable belongs to another program (the agent, the
// benchmarks) rather than being a misspelled key of this configuration.
func otherProgram(name string) bool {
	return agentVariables[name] || strings.HasPrefix(name, "IMPRUN_AGENT_NGINX_") || strings.HasPrefix(name, "IMPRUN_BENCH_")
}

// envKey maps IMPRUN_DATABASE_URL to database.url. Keys may contain underscores themselves
// (grpc.max_recv_msg_size), so the lookup goes through the known keys rather than a rewrite.
func envKey(name string, known map[string]bool) (string, bool) {
	want := strings.ToLower(strings.TrimPrefix(name, "IMPRUN_"))
	for k := range known {
		if strings.ReplaceAll(k, ".", "_") == want {
			return k, true
		}
	}
	return "", false
}

// EnvVar returns the environment variable that sets a key.
func EnvVar(key string) string {
	return "IMPRUN_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// FieldError is a validation failure of one key.
type FieldError struct {
	Key    string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("config key %s (%s): %s", e.Key, EnvVar(e.Key), e.Reason)
}

// Validate checks every value and returns all failures joined, each naming its key.
// It is long because it is a flat list of independent checks, one per key, in the order of the
// struct: splitting it would only scatter that list.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, reason string) { errs = append(errs, &FieldError{Key: key, Reason: reason}) }

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be one of debug, info, warn, error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json")
	}
	checkAddr := func(key, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "must be host:port")
		}
	}
	checkAddr("http.addr", c.HTTP.Addr)
	if c.HTTP.PprofAddr != "" {
		checkAddr("http.pprof_addr", c.HTTP.PprofAddr)
	}
	checkAddr("grpc.addr", c.GRPC.Addr)
	checkAddr("temporal.host_port", c.Temporal.HostPort)
	checkAddr("worker.http_addr", c.Worker.HTTPAddr)
	checkAddr("oidc.dev_issuer_addr", c.OIDC.DevIssuerAddr)
	if _, err := c.HTTP.TrustedProxyNets(); err != nil {
		bad("http.trusted_proxies", err.Error())
	}
	if _, err := parseSize(c.HTTP.BodyLimit); err != nil {
		bad("http.body_limit", err.Error())
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration")
		}
	}
	positive("http.shutdown_timeout", c.HTTP.ShutdownTimeout)
	positive("http.read_timeout", c.HTTP.ReadTimeout)
	positive("http.write_timeout", c.HTTP.WriteTimeout)
	positive("database.connect_retry", c.Database.ConnectRetry)
	positive("temporal.connect_retry", c.Temporal.ConnectRetry)
	positive("agent.jwt_ttl", c.Agent.JWTTTL)
	positive("agent.heartbeat_interval", c.Agent.HeartbeatInterval)
	positive("agent.registration_token_ttl", c.Agent.RegistrationTokenTTL)
	positive("agent.presence_flush_interval", c.Agent.PresenceFlushInterval)
	positive("workflow.publish_deadline", c.Workflow.PublishDeadline)
	positive("workflow.approval_deadline", c.Workflow.ApprovalDeadline)
	positive("grpc.keepalive_min_time", c.GRPC.KeepaliveMin)
	if c.Agent.MissedHeartbeats < 1 {
		bad("agent.missed_heartbeats", "must be at least 1")
	}
	if c.Agent.ConnectSlots < 0 || (c.Agent.ConnectSlots > 0 && c.Agent.ConnectSlots >= c.Database.MaxOpenConns) {
		bad("agent.connect_slots", "must be 0 (half the pool) or fewer than database.max_open_conns")
	}
	if c.Agent.ConnectQueue < 1 {
		bad("agent.connect_queue", "must be at least 1")
	}
	if c.GRPC.MaxRecvMsgSize < 1024 {
		bad("grpc.max_recv_msg_size", "must be at least 1024 bytes")
	}
	if c.GRPC.MaxSendMsgSize < 1024 {
		bad("grpc.max_send_msg_size", "must be at least 1024 bytes")
	}
	if (c.GRPC.TLSCertFile == "") != (c.GRPC.TLSKeyFile == "") {
		bad("grpc.tls_cert_file", "tls_cert_file and tls_key_file must be set together")
	}
	if u, err := url.Parse(c.Database.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("database.url", "must be a postgres:// URL")
	}
	if c.Database.MaxOpenConns < 1 {
		bad("database.max_open_conns", "must be at least 1")
	}
	if c.Temporal.Namespace == "" {
		bad("temporal.namespace", "must not be empty")
	}
	if _, err := temporalclient.Compression(c.Temporal.GRPCCompression); err != nil {
		bad("temporal.grpc_compression", "none or gzip")
	}
	if c.Temporal.TaskQueue == "" {
		bad("temporal.task_queue", "must not be empty")
	}
	if u, err := url.Parse(c.OIDC.IssuerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("oidc.issuer_url", "must be an http(s) URL")
	}
	if c.OIDC.Audience == "" {
		bad("oidc.audience", "must not be empty")
	}
	if c.OIDC.RolesClaim == "" {
		bad("oidc.roles_claim", "must not be empty")
	}
	if c.OIDC.EmailClaim == "" {
		bad("oidc.email_claim", "must not be empty")
	}
	if c.Agent.JWTSecret != "" && len(c.Agent.JWTSecret) < 32 {
		bad("agent.jwt_secret", "must be at least 32 characters")
	}
	return errors.Join(errs...)
}

// TrustedProxyNets parses http.trusted_proxies.
func (h HTTP) TrustedProxyNets() ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, part := range strings.Split(h.TrustedProxies, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		_, n, err := net.ParseCIDR(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR range", part)
		}
		out = append(out, n)
	}
	return out, nil
}

// BodyLimitBytes returns http.body_limit in bytes.
func (c *Config) BodyLimitBytes() int64 {
	n, _ := parseSize(c.HTTP.BodyLimit)
	return n
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s {
		return 0, errors.New("must be a size such as 512K or 1M")
	}
	return n * mult, nil
}
