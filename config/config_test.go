package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imprun.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := Load("")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", c.HTTP.Addr)
	require.Equal(t, 24*time.Hour, c.Workflow.PublishDeadline)
	require.Equal(t, "realm_access.roles", c.OIDC.RolesClaim)
	require.EqualValues(t, 1<<20, c.BodyLimitBytes())
	require.Equal(t, 10, c.AgentConnectSlots(), "half of the default pool of 20")
	require.Equal(t, 10000, c.Agent.ConnectQueue)
}

func TestAgentConnectSlots(t *testing.T) {
	t.Setenv("IMPRUN_DATABASE_MAX_OPEN_CONNS", "7")
	c, err := Load("")
	require.NoError(t, err)
	require.Equal(t, 3, c.AgentConnectSlots())
	t.Setenv("IMPRUN_DATABASE_MAX_OPEN_CONNS", "1")
	c, err = Load("")
	require.NoError(t, err)
	require.Equal(t, 1, c.AgentConnectSlots(), "at least one")
	t.Setenv("IMPRUN_AGENT_CONNECT_SLOTS", "4")
	t.Setenv("IMPRUN_DATABASE_MAX_OPEN_CONNS", "5")
	c, err = Load("")
	require.NoError(t, err)
	require.Equal(t, 4, c.AgentConnectSlots())
}

func TestFileThenEnvironment(t *testing.T) {
	p := writeFile(t, "http:\n  addr: 0.0.0.0:9000\ntemporal:\n  namespace: staging\nagent:\n  heartbeat_interval: 5s\n")
	t.Setenv("IMPRUN_TEMPORAL_NAMESPACE", "prod")
	t.Setenv("IMPRUN_GRPC_MAX_RECV_MSG_SIZE", "2048")
	c, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:9000", c.HTTP.Addr)
	require.Equal(t, "prod", c.Temporal.Namespace, "the environment wins over the file")
	require.Equal(t, 5*time.Second, c.Agent.HeartbeatInterval)
	require.Equal(t, 2048, c.GRPC.MaxRecvMsgSize)
}

// Every refusal names the key, so an operator knows what to fix.
func TestBadValuesNameTheKey(t *testing.T) {
	cases := []struct {
		name, file string
		env        map[string]string
		wantKey    string
	}{
		{name: "unknown file key", file: "http:\n  adress: x\n", wantKey: `"http.adress"`},
		{name: "unknown env var", env: map[string]string{"IMPRUN_DATABSE_URL": "postgres://x"}, wantKey: "IMPRUN_DATABSE_URL"},
		{name: "bad log level", env: map[string]string{"IMPRUN_LOG_LEVEL": "loud"}, wantKey: "log.level"},
		{name: "bad log format", file: "log:\n  format: xml\n", wantKey: "log.format"},
		{name: "bad http addr", env: map[string]string{"IMPRUN_HTTP_ADDR": "8080"}, wantKey: "http.addr"},
		{name: "bad database url", env: map[string]string{"IMPRUN_DATABASE_URL": "mysql://x"}, wantKey: "database.url"},
		{name: "bad duration", env: map[string]string{"IMPRUN_AGENT_HEARTBEAT_INTERVAL": "often"}, wantKey: "heartbeat_interval"},
		{name: "negative duration", env: map[string]string{"IMPRUN_WORKFLOW_PUBLISH_DEADLINE": "-1h"}, wantKey: "workflow.publish_deadline"},
		{name: "bad body limit", env: map[string]string{"IMPRUN_HTTP_BODY_LIMIT": "lots"}, wantKey: "http.body_limit"},
		{name: "bad issuer", env: map[string]string{"IMPRUN_OIDC_ISSUER_URL": "ftp://x"}, wantKey: "oidc.issuer_url"},
		{name: "short jwt secret", env: map[string]string{"IMPRUN_AGENT_JWT_SECRET": "short"}, wantKey: "agent.jwt_secret"},
		{name: "tls half set", env: map[string]string{"IMPRUN_GRPC_TLS_CERT_FILE": "/x.pem"}, wantKey: "grpc.tls_cert_file"},
		{name: "missed heartbeats zero", env: map[string]string{"IMPRUN_AGENT_MISSED_HEARTBEATS": "0"}, wantKey: "agent.missed_heartbeats"},
		{name: "connect slots the whole pool", env: map[string]string{"IMPRUN_AGENT_CONNECT_SLOTS": "20"}, wantKey: "agent.connect_slots"},
		{name: "connect slots negative", env: map[string]string{"IMPRUN_AGENT_CONNECT_SLOTS": "-1"}, wantKey: "agent.connect_slots"},
		{name: "connect queue zero", env: map[string]string{"IMPRUN_AGENT_CONNECT_QUEUE": "0"}, wantKey: "agent.connect_queue"},
		{name: "bad temporal compression", env: map[string]string{"IMPRUN_TEMPORAL_GRPC_COMPRESSION": "zstd"}, wantKey: "temporal.grpc_compression"},
		{name: "not a number", env: map[string]string{"IMPRUN_DATABASE_MAX_OPEN_CONNS": "many"}, wantKey: "max_open_conns"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			_, err := Load(path)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.wantKey)
		})
	}
}

func TestOtherProgramsVariablesAreNotKeys(t *testing.T) {
	t.Setenv("IMPRUN_AGENT_SERVER", "127.0.0.1:9090")
	t.Setenv("IMPRUN_BENCH_AGENTS", "10")
	t.Setenv("IMPRUN_AGENT_DATA_PLANE", "nginx")
	t.Setenv("IMPRUN_AGENT_NGINX_LISTEN", "80=127.0.0.1:8080")
	_, err := Load("")
	require.NoError(t, err)
	t.Setenv("IMPRUN_AGENT_JWT_SECRT", "x")
	_, err = Load("")
	require.ErrorContains(t, err, "IMPRUN_AGENT_JWT_SECRT", "a misspelled key is still refused")
}

func TestEnvVarName(t *testing.T) {
	require.Equal(t, "IMPRUN_GRPC_MAX_RECV_MSG_SIZE", EnvVar("grpc.max_recv_msg_size"))
}

func TestTrustedProxies(t *testing.T) {
	t.Setenv("IMPRUN_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1/32")
	c, err := Load("")
	require.NoError(t, err)
	nets, err := c.HTTP.TrustedProxyNets()
	require.NoError(t, err)
	require.Len(t, nets, 2)
	t.Setenv("IMPRUN_HTTP_TRUSTED_PROXIES", "everyone")
	_, err = Load("")
	require.ErrorContains(t, err, "http.trusted_proxies")
}

func TestServeSafety(t *testing.T) {
	c, err := Load("")
	require.NoError(t, err)
	require.NoError(t, c.ServeSafety(), "the make run defaults are loopback")

	c.OIDC.IssuerURL = "http://keycloak:8080/realms/imprun"
	c.GRPC.Addr = "0.0.0.0:9090"
	err = c.ServeSafety()
	require.ErrorContains(t, err, "oidc.issuer_url")
	require.ErrorContains(t, err, "grpc.addr")

	c.OIDC.IssuerURL = "https://login.example.com/realms/imprun"
	c.GRPC.TLSCertFile, c.GRPC.TLSKeyFile = "/etc/imprun/tls.crt", "/etc/imprun/tls.key"
	require.NoError(t, c.ServeSafety(), "https and TLS are fine anywhere")

	c.OIDC.IssuerURL, c.GRPC.TLSCertFile = "http://keycloak:8080/realms/imprun", ""
	c.Dev.AllowInsecureTransport = true
	require.NoError(t, c.ServeSafety(), "the named development setting allows it")
}

func TestDevSettingFromEnvironment(t *testing.T) {
	t.Setenv("IMPRUN_DEV_ALLOW_INSECURE_TRANSPORT", "true")
	c, err := Load("")
	require.NoError(t, err)
	require.True(t, c.Dev.AllowInsecureTransport)
}
