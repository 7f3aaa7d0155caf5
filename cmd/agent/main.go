// Command agent runs the reference imprun agent (package agent) next to a cluster's gateways.
//
//	agent [run] --server HOST:PORT --api URL --state-dir DIR [--registration-token T] ...
//	agent verify --state-dir DIR --publish ID (--key imp_xxx.yyy | --client-id ID --client-secret S)
//
// Every flag of run can also come from the environment (IMPRUN_AGENT_SERVER, IMPRUN_AGENT_API,
// IMPRUN_AGENT_STATE_DIR, IMPRUN_AGENT_REGISTRATION_TOKEN, IMPRUN_AGENT_NAME,
// IMPRUN_AGENT_CA_FILE, IMPRUN_AGENT_GATEWAY_CLASS, IMPRUN_AGENT_NAMESPACE,
// IMPRUN_AGENT_VERIFY_LISTEN, IMPRUN_AGENT_DATA_PLANE, IMPRUN_AGENT_NGINX_*, IMPRUN_AGENT_EGRESS_ALLOW, IMPRUN_AGENT_LOG_LEVEL);
// a flag wins over the environment. Prefer
// the environment for the registration token: flags are visible to every user in ps.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/egress"
	"github.com/imprun/imprun-server/tracing"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = agent.DefaultVersion

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // run failed; verify denied
	exitUsage   = 2
	exitRevoked = 3 // the server revoked the agent; restarting it will not help
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "verify":
			return verifyMain(args[1:], stdout, stderr)
		case "run":
			args = args[1:]
		}
	}
	return runMain(ctx, args, stderr)
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envBool(name string) bool {
	v, _ := strconv.ParseBool(os.Getenv(name))
	return v
}

// parseEgress reads "127.0.0.0/8,::1,sidecar.local": addresses and ranges, else host names.
func parseEgress(s string) (egress.Policy, error) {
	var cidrs, names []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if _, err := egress.Parse([]string{part}, nil); err == nil {
			cidrs = append(cidrs, part)
		} else {
			names = append(names, part)
		}
	}
	return egress.Parse(cidrs, names)
}

// parseListen reads "80=127.0.0.1:8080,443=127.0.0.1:8443".
func parseListen(s string) (map[int]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[int]string{}
	for _, part := range strings.Split(s, ",") {
		port, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(port)
		if !ok || err != nil || n < 1 || n > 65535 || addr == "" {
			return nil, fmt.Errorf("%q is not PORT=ADDR", part)
		}
		out[n] = addr
	}
	return out, nil
}

// runMain is long because a third of it is the flat list of flags (each with its environment
// variable) and another third the one agent.Config they fill; the steps between are short.
func runMain(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", env("IMPRUN_AGENT_SERVER", ""), "control plane gRPC address (host:port)")
	api := fs.String("api", env("IMPRUN_AGENT_API", ""), "control plane REST base URL (https://...)")
	stateDir := fs.String("state-dir", env("IMPRUN_AGENT_STATE_DIR", ""), "state directory (created with mode 0700)")
	regToken := fs.String("registration-token", env("IMPRUN_AGENT_REGISTRATION_TOKEN", ""), "registration token, used on first start only (prefer the environment variable)")
	name := fs.String("name", env("IMPRUN_AGENT_NAME", ""), "agent name requested at registration")
	caFile := fs.String("ca-file", env("IMPRUN_AGENT_CA_FILE", ""), "PEM CA bundle for the server's TLS certificates (default: system roots)")
	insecureFlag := fs.Bool("insecure", false, "plaintext gRPC/HTTP, allowed only to a loopback server (development)")
	gatewayClass := fs.String("gateway-class", env("IMPRUN_AGENT_GATEWAY_CLASS", ""), "render for this gateway class instead of the snapshot's (envoy-gateway, nginx)")
	namespace := fs.String("namespace", env("IMPRUN_AGENT_NAMESPACE", ""), "Kubernetes namespace of rendered resources (default imprun-gateway)")
	metricsListen := fs.String("metrics-listen", env("IMPRUN_AGENT_METRICS_LISTEN", ""), "serve Prometheus /metrics on this address (e.g. :9464); off when empty")
	verifyListen := fs.String("verify-listen", env("IMPRUN_AGENT_VERIFY_LISTEN", ""), "serve the credential verifier for gateway ext-auth on this address (e.g. :8081); off when empty, 127.0.0.1:8081 for --data-plane nginx")
	dataPlane := fs.String("data-plane", env("IMPRUN_AGENT_DATA_PLANE", agent.DataPlaneFiles), "files (render into the state directory) or nginx (run an nginx and load every publish into it)")
	nginxBinary := fs.String("nginx-binary", env("IMPRUN_AGENT_NGINX_BINARY", ""), "nginx executable (default: nginx in PATH, else /usr/sbin/nginx)")
	nginxDir := fs.String("nginx-dir", env("IMPRUN_AGENT_NGINX_DIR", ""), "nginx prefix directory (default: <state-dir>/nginx)")
	nginxListen := fs.String("nginx-listen", env("IMPRUN_AGENT_NGINX_LISTEN", ""), "listener port mappings PORT=ADDR[,PORT=ADDR], e.g. 80=127.0.0.1:8080; unmapped ports listen as they are")
	nginxWorkers := fs.String("nginx-workers", env("IMPRUN_AGENT_NGINX_WORKERS", ""), "nginx worker_processes (default auto)")
	nginxHeadersMore := fs.String("nginx-headers-more", env("IMPRUN_AGENT_NGINX_HEADERS_MORE", "auto"), "auto, off, or the path of ngx_http_headers_more_filter_module.so (clears client-sent X-Imprun-* headers)")
	egressAllow := fs.String("egress-allow", env("IMPRUN_AGENT_EGRESS_ALLOW", ""), "backend addresses (CIDRs) and host names (or .suffixes) this agent allows beyond the default egress policy, comma-separated, e.g. 127.0.0.0/8 for a sidecar backend")
	nginxStop := fs.Bool("nginx-stop-on-exit", envBool("IMPRUN_AGENT_NGINX_STOP_ON_EXIT"), "stop nginx when the agent exits (default: nginx keeps serving and the next agent adopts it)")
	verifierURL := fs.String("verifier-url", env("IMPRUN_AGENT_VERIFIER_URL", ""), "URL rendered gateway config calls to verify credentials")
	logLevel := fs.String("log-level", env("IMPRUN_AGENT_LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "agent: bad --log-level %q\n", *logLevel)
		return exitUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	listen, err := parseListen(*nginxListen)
	if err != nil {
		fmt.Fprintf(stderr, "agent: --nginx-listen: %v\n", err)
		return exitUsage
	}
	egressPolicy, err := parseEgress(*egressAllow)
	if err != nil {
		fmt.Fprintf(stderr, "agent: --egress-allow: %v\n", err)
		return exitUsage
	}
	// Tracing from the standard OTEL_* variables (off unless asked for): the agent's spans for
	// commands join the traces the server sends with them.
	shutdownTracing, err := tracing.Setup(ctx, "imprun-agent")
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exitUsage
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(fctx)
	}()
	creds, httpClient, err := transport(*server, *api, *caFile, *insecureFlag)
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exitUsage
	}
	a, err := agent.New(agent.Config{
		ServerAddr:        *server,
		APIBaseURL:        *api,
		StateDir:          *stateDir,
		RegistrationToken: *regToken,
		Name:              *name,
		Version:           version,
		GatewayClass:      *gatewayClass,
		Render:            agent.RenderOptions{Namespace: *namespace, VerifierURL: *verifierURL, Egress: egressPolicy},
		DataPlane:         *dataPlane,
		VerifyListen:      *verifyListen,
		MetricsListen:     *metricsListen,
		Nginx: agent.NginxConfig{Binary: *nginxBinary, Dir: *nginxDir, Listen: listen, WorkerProcesses: *nginxWorkers,
			HeadersMore: *nginxHeadersMore, StopOnExit: *nginxStop},
		TransportCredentials: creds,
		HTTPClient:           httpClient,
		Logger:               log,
	})
	if err != nil {
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exitUsage
	}

	if path := os.Getenv("IMPRUN_AGENT_CPUPROFILE"); path != "" {
		// For looking into what the agent costs: its CPU profile until it exits, in
		// path.<pid> (several agents may share the environment).
		if stop, err := startCPUProfile(fmt.Sprintf("%s.%d", path, os.Getpid())); err != nil {
			log.Warn("cpu profile", "err", err)
		} else {
			defer stop()
		}
	}
	err = a.Run(ctx)
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return exitOK
	case errors.Is(err, agent.ErrRevoked):
		return exitRevoked
	default:
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exitFailure
	}
}

// transport builds the gRPC credentials and the HTTP client. TLS is the default; plaintext
// needs --insecure and a loopback server, so a typo cannot send the agent JWT in the clear
// across a network.
func transport(server, api, caFile string, insecureFlag bool) (credentials.TransportCredentials, *http.Client, error) {
	u, err := url.Parse(api)
	if err != nil || u.Host == "" {
		return nil, nil, fmt.Errorf("--api %q is not an absolute URL", api)
	}
	if insecureFlag {
		if !isLoopback(grpcHost(server)) {
			return nil, nil, fmt.Errorf("--insecure is allowed only with a loopback --server, not %q", server)
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return nil, nil, fmt.Errorf("--insecure is allowed only with a loopback --api, not %q", api)
		}
		if caFile != "" {
			return nil, nil, errors.New("--insecure and --ca-file contradict each other")
		}
		return insecure.NewCredentials(), agent.NewHTTPClient(nil), nil
	}
	if u.Scheme != "https" {
		return nil, nil, fmt.Errorf("--api %q must be https (or pass --insecure for a loopback development server)", api)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
		}
		tlsCfg.RootCAs = pool
	}
	return credentials.NewTLS(tlsCfg), agent.NewHTTPClient(tlsCfg.Clone()), nil
}

// grpcHost extracts the host from a gRPC target such as "host:port" or "dns:///host:port".
func grpcHost(target string) string {
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+4:]
	}
	if h, _, err := net.SplitHostPort(target); err == nil {
		return h
	}
	return target
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func verifyMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", env("IMPRUN_AGENT_STATE_DIR", ""), "the agent's state directory")
	publish := fs.String("publish", "", "publish id the request is for")
	key := fs.String("key", "", "API key (imp_<prefix>.<secret>)")
	clientID := fs.String("client-id", "", "OAuth client id (instead of --key)")
	clientSecret := fs.String("client-secret", "", "OAuth client secret (with --client-id)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *stateDir == "" || *publish == "" || (*key == "") == (*clientID == "") {
		fmt.Fprintln(stderr, "agent verify: need --state-dir, --publish and either --key or --client-id/--client-secret")
		return exitUsage
	}
	store, err := agent.OpenCredentialStore(*stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "agent verify: %v\n", err)
		return exitUsage
	}
	// A fresh process has fresh counters: this checks the credential and the grant, and only
	// limits that a single request can exceed (a quota of zero left is not tracked here).
	v := agent.NewVerifier(store)
	var d agent.Decision
	if *key != "" {
		d = v.VerifyAPIKey(*publish, *key)
	} else {
		d = v.VerifyOAuthClient(*publish, *clientID, *clientSecret)
	}
	if d.Allowed {
		fmt.Fprintf(stdout, "allowed credential=%s plan=%s\n", d.CredentialID, d.PlanID)
		return exitOK
	}
	fmt.Fprintf(stdout, "denied reason=%s", d.Reason)
	if d.CredentialID != "" {
		fmt.Fprintf(stdout, " credential=%s", d.CredentialID)
	}
	fmt.Fprintln(stdout)
	return exitFailure
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}
