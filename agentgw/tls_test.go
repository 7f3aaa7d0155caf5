package agentgw_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/imprun/imprun-server/agent"
	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	ca := &testCA{cert: cert, key: key, pemFile: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.pemFile, "CERTIFICATE", der)
	return ca
}

// issueServer writes a server certificate for 127.0.0.1 signed by ca and its key.
func (ca *testCA) issueServer(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "imprun-api"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// trusting returns client TLS credentials that trust only the CA in caFile, as the agent's
// --ca-file does.
func trusting(t *testing.T, caFile string) credentials.TransportCredentials {
	t.Helper()
	return credentials.NewTLS(&tls.Config{RootCAs: poolOf(t, caFile), MinVersion: tls.VersionTLS12})
}

// startTLSGateway starts an agent gateway with the given TLS certificate on the env's database,
// as the api process does with grpc.tls_cert_file and grpc.tls_key_file.
func startTLSGateway(t *testing.T, env *apitest.Env, certFile, keyFile string) string {
	t.Helper()
	signer, err := agentgw.NewSigner(apitest.AgentJWTSecret, time.Hour)
	require.NoError(t, err)
	gw := agentgw.New(agentgw.Config{DatabaseURL: env.DBURL, HeartbeatInterval: timing.HeartbeatInterval,
		MissedHeartbeats: timing.MissedHeartbeats, FlushInterval: timing.FlushInterval}, env.Store, signer,
		agentgw.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	srv, err := agentgw.NewGRPCServer(gw, agentgw.ServerOptions{TLSCertFile: certFile, TLSKeyFile: keyFile,
		MaxRecvMsgSize: 64 << 10, MaxSendMsgSize: 4 << 20, KeepaliveMinTime: time.Second})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { gw.Run(ctx); close(done) }()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Stop()
	})
	select {
	case <-gw.ListenReady():
	case <-time.After(30 * time.Second):
		t.Fatal("the TLS gateway did not LISTEN")
	}
	return ln.Addr().String()
}

// The gateway serves TLS from its configured certificate: the real agent trusting the CA file
// registers and connects; a plaintext client and a client trusting another CA get nowhere and
// consume nothing.
func TestGRPCTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "imprun-test-ca")
	otherCA := newTestCA(t, dir, "someone-elses-ca")
	certFile, keyFile := ca.issueServer(t, dir)
	addr := startTLSGateway(t, f.env, certFile, keyFile)
	tok := f.token(t, nil) // single use: the refused attempts below must not use it up

	register := &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: &agentv1.ConnectRequest{
		Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: tok}, AgentName: "intruder"}}}
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":       insecure.NewCredentials(),
		"other CA":        trusting(t, otherCA.pemFile),
		"no CA (system)":  credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}),
		"wrong host name": credentials.NewTLS(&tls.Config{RootCAs: poolOf(t, ca.pemFile), ServerName: "api.example.com", MinVersion: tls.VersionTLS12}),
	} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := agentv1.NewAgentServiceClient(conn).Connect(ctx)
		if err == nil {
			if err = stream.Send(register); err == nil {
				_, err = stream.Recv()
			}
		}
		cancel()
		conn.Close()
		require.Error(t, err, name)
		require.Equal(t, codes.Unavailable, status.Code(err), "%s: %v", name, err)
	}
	require.Zero(t, f.env.DB.RegistrationTokenUses(t), "nothing reached the gateway")

	// The real agent, trusting the CA file, registers and stays connected over TLS.
	stateDir := t.TempDir()
	a, err := agent.New(agent.Config{ServerAddr: addr, APIBaseURL: f.env.URL, StateDir: stateDir, RegistrationToken: tok, Name: "edge-tls",
		TransportCredentials: trusting(t, ca.pemFile), MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{dir: stateDir, cancel: cancel, done: make(chan error, 1), a: a}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	id := ra.identity(t)
	require.Equal(t, f.clusterID, id.ClusterID)
	waitStatus(t, f.env, id.AgentID, models.AgentConnected, 10*time.Second)

	// Commands reach it over TLS too.
	cmd := enqueueUpsert(t, f.env, f.clusterID, uuid.NewString(), 1)
	waitAcked(t, f.env, cmd.ID, id.AgentID)
}

func poolOf(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(b))
	return pool
}

// A certificate that can't be loaded is a start-up error, not a plaintext server.
func TestGRPCTLSBadCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("not a certificate"), 0o600))
	_, err := agentgw.NewGRPCServer(nil, agentgw.ServerOptions{TLSCertFile: filepath.Join(dir, "cert.pem"), TLSKeyFile: filepath.Join(dir, "key.pem")})
	require.Error(t, err)
}
