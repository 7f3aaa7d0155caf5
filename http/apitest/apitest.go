// Package apitest starts the real REST API for black-box tests: a fresh migrated database on the
// harness Postgres, the real dev OIDC issuer on loopback, tokens for personas, and a client that
// checks every response against the OpenAPI document, so an undocumented endpoint, status or
// field fails the test that hit it.
package apitest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/imprun/imprun-server/activities"
	"github.com/imprun/imprun-server/agentgw"
	"github.com/imprun/imprun-server/devissuer"
	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/metrics"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/store/storetest"
	"github.com/imprun/imprun-server/temporalclient"
	"github.com/imprun/imprun-server/testharness"
)

// Audience is the audience the test API expects.
const Audience = "imprun-server"

var sharedIssuer struct {
	once sync.Once
	iss  *devissuer.Issuer
	err  error
}

// Issuer returns the OIDC issuer shared by the test binary.
func Issuer(t testing.TB) *devissuer.Issuer {
	t.Helper()
	sharedIssuer.once.Do(func() {
		key, err := devissuer.NewKey()
		if err != nil {
			sharedIssuer.err = err
			return
		}
		sharedIssuer.iss, sharedIssuer.err = devissuer.Start("127.0.0.1:0", key)
		if sharedIssuer.err == nil {
			testharness.AtExit(func() { _ = sharedIssuer.iss.Close() })
		}
	})
	if sharedIssuer.err != nil {
		t.Fatalf("dev issuer: %v", sharedIssuer.err)
	}
	return sharedIssuer.iss
}

// Env is one running API with its own database.
type Env struct {
	T     testing.TB
	URL   string
	DBURL string
	SQL   *sql.DB
	// DB reads and seeds the database behind the API's back (the tests' statements).
	DB       *storetest.DB
	Store    *store.Store
	Issuer   *devissuer.Issuer
	API      *httpapi.API
	Temporal *temporalclient.Holder
	// TaskQueue is where this env's workflows run.
	TaskQueue string
	// TemporalServer is the harness dev server (when Options.WithTemporal).
	TemporalServer *testharness.TemporalServer
	// Log is where the env's api, gateways and workers log; Logs returns everything so far.
	Log  *slog.Logger
	logs *LockedBuffer
	// Replica is the first agent gateway (when Options.Agents is set).
	Replica *Replica

	router routers.Router
	timing AgentTiming

	gatewayOptions []agentgw.Option

	// Metrics is the registry the env's /metrics serves: HTTP, every gateway replica (labelled
	// replica-1, replica-2, ...) and the outcomes its workers record.
	Metrics  *prometheus.Registry
	outcomes *metrics.Outcomes
	replicas atomic.Int32
}

// Replica is one agent gateway serving gRPC, as one api replica would.
type Replica struct {
	Gateway *agentgw.Gateway
	Addr    string
	stop    func()
	crash   func()
	once    sync.Once
}

// Stop ends the replica as a SIGTERM would: agents are told Close{SHUTDOWN}, streams drain.
func (r *Replica) Stop() { r.once.Do(r.stop) }

// Crash ends a replica of StartCrashableReplica as a killed process ends: its database pool
// goes first, so nothing it does afterwards (releasing its agents, its lease) reaches Postgres,
// then its streams are cut.
func (r *Replica) Crash() {
	if r.crash == nil {
		panic("apitest: Crash needs a replica of StartCrashableReplica")
	}
	r.once.Do(r.crash)
}

// StartReplica starts another agent gateway on the same database (addr "127.0.0.1:0" picks a
// port; a fixed addr lets a test restart a replica where agents expect it).
func (e *Env) StartReplica(t testing.TB, addr string) *Replica {
	t.Helper()
	return e.startReplica(t, addr, e.Store, nil)
}

// StartCrashableReplica is StartReplica with a database pool of the replica's own, so that
// Replica.Crash can take the database away from it as a dying process would.
func (e *Env) StartCrashableReplica(t testing.TB, addr string) *Replica {
	t.Helper()
	sqlDB, err := store.OpenDB(e.DBURL)
	must(t, err)
	t.Cleanup(func() { sqlDB.Close() })
	db, err := store.Open(sqlDB)
	must(t, err)
	return e.startReplica(t, addr, store.New(db), sqlDB)
}

func (e *Env) startReplica(t testing.TB, addr string, st *store.Store, own *sql.DB) *Replica {
	t.Helper()
	tm := e.timing
	if tm.JWTTTL == 0 {
		tm.JWTTTL = time.Hour
	}
	signer, err := agentgw.NewSigner(AgentJWTSecret, tm.JWTTTL)
	must(t, err)
	name := fmt.Sprintf("replica-%d", e.replicas.Add(1))
	gw := agentgw.New(agentgw.Config{DatabaseURL: e.DBURL, HeartbeatInterval: tm.HeartbeatInterval,
		MissedHeartbeats: tm.MissedHeartbeats, FlushInterval: tm.FlushInterval, DriftGrace: tm.DriftGrace, RepairEvery: tm.RepairEvery, ReplicaName: name}, st, signer,
		append([]agentgw.Option{agentgw.WithResultSink(agentgw.TemporalSink{Temporal: e.Temporal, Store: e.Store, Decided: agentgw.NewDecidedCommands()}), agentgw.WithLogger(e.Log),
			agentgw.WithMetrics(e.Metrics, name)}, e.gatewayOptions...)...)
	// The production defaults (grpc.max_recv_msg_size): an agent sends its whole applied set in
	// one message, 75 KB for some 900 publishes.
	srv, err := agentgw.NewGRPCServer(gw, agentgw.ServerOptions{MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 4 << 20, KeepaliveMinTime: time.Second})
	must(t, err)
	var ln net.Listener
	for i := 0; ; i++ {
		ln, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond) // a restarted replica's port may take a moment to free
	}
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { gw.Run(ctx); close(done) }()
	go func() { _ = srv.Serve(ln) }()
	select {
	case <-gw.ListenReady():
	case <-time.After(30 * time.Second):
		t.Fatal("agent gateway did not LISTEN within 30s")
	}
	r := &Replica{Gateway: gw, Addr: ln.Addr().String()}
	r.stop = func() {
		cancel()
		<-done
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			srv.Stop()
		}
	}
	if own != nil {
		r.crash = func() {
			_ = own.Close() // from here on every write of the replica fails, as if it were gone
			srv.Stop()
			cancel()
			<-done
		}
	}
	t.Cleanup(r.Stop)
	return r
}

// StartWorker runs an in-process Temporal worker for this env's task queue with every
// workflow and activity registered, as cmd/worker does; stop it with the returned func.
func (e *Env) StartWorker(t testing.TB) (stop func()) {
	t.Helper()
	tc, err := e.Temporal.Client()
	must(t, err)
	w := worker.New(tc, e.TaskQueue, activities.WorkerOptions())
	activities.RegisterAll(w, e.Store, tc, e.TaskQueue, e.Log, e.outcomes)
	must(t, w.Start())
	dctx, dcancel := context.WithCancel(context.Background())
	go (&activities.Dispatcher{Store: e.Store, Temporal: tc, TaskQueue: e.TaskQueue, Log: e.Log,
		Every: 200 * time.Millisecond, Grace: time.Second, ClaimGrace: 2 * time.Second, ReconcileEvery: 500 * time.Millisecond}).Run(dctx)
	var once sync.Once
	stop = func() { once.Do(func() { dcancel(); w.Stop() }) }
	t.Cleanup(stop)
	return stop
}

// WithGatewayOptions adds options to the gateways this env starts from now on.
func (e *Env) WithGatewayOptions(opts ...agentgw.Option) {
	e.gatewayOptions = append(e.gatewayOptions, opts...)
}

// Options change how an Env is built.
type Options struct {
	// Logger replaces the env's log (kept in memory at debug level for Logs); benchmarks pass
	// one at the production level so the log buffer does not grow with every request.
	Logger *slog.Logger
	// IssuerURL overrides the issuer the API trusts (to test an unreachable issuer).
	IssuerURL string
	// WithTemporal connects the API to the harness Temporal dev server.
	WithTemporal bool
	// Hooks builds the API hooks (agent auth, modules) once the store exists.
	Hooks func(e *Env) httpapi.Hooks
	// DBURL reuses an existing database instead of a fresh one.
	DBURL string
	// MaxOpenConns and MaxIdleConns size the env's pool before anything serves (zero: no
	// limit and 20 idle); a benchmark whose agents connect the moment the gateway listens
	// sizes it as the api does.
	MaxOpenConns, MaxIdleConns int
	// Agents starts the agent gateway (gRPC on loopback) with this presence timing; the zero
	// value leaves the /v1/agent group closed.
	Agents *AgentTiming
	// AgentAddr is where that gateway listens (default "127.0.0.1:0"); a fixed address lets
	// a process that replaces a killed replica serve its agents where they reconnect.
	AgentAddr string
	// PublishDeadline overrides the default publish deadline (24 h).
	PublishDeadline time.Duration
	// ApprovalDeadline overrides the default subscription approval deadline (7 days).
	ApprovalDeadline time.Duration
	// TaskQueue is the Temporal task queue of this env's workflows (default: unique per env,
	// so parallel tests' workers never take each other's tasks).
	TaskQueue string
	// GatewayOptions are passed to every agent gateway the env starts.
	GatewayOptions []agentgw.Option
}

// AgentTiming is the presence timing of test gateways: short, so tests see disconnects fast.
type AgentTiming struct {
	HeartbeatInterval time.Duration
	MissedHeartbeats  int
	FlushInterval     time.Duration
	JWTTTL            time.Duration
	// DriftGrace and RepairEvery tune desired vs applied (agentgw.Config); zero: defaults.
	DriftGrace  time.Duration
	RepairEvery time.Duration
}

// AgentJWTSecret signs agent JWTs in tests.
const AgentJWTSecret = "apitest-agent-jwt-secret-0123456789abcdef"

// New starts an API for t.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	e := &Env{T: t, Issuer: Issuer(t), Temporal: &temporalclient.Holder{}, logs: &LockedBuffer{}, Metrics: prometheus.NewRegistry()}
	e.outcomes = metrics.NewOutcomes(e.Metrics)
	e.Log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.Logger != nil {
		e.Log = o.Logger
	}
	e.DBURL = o.DBURL
	if e.DBURL == "" {
		e.DBURL = testharness.Postgres(t).NewDatabase(t)
	}
	var err error
	e.SQL, err = store.OpenDB(e.DBURL)
	must(t, err)
	// database/sql keeps 2 idle connections by default: under 16 concurrent requests every
	// other one opened a new Postgres connection (a backend fork). Keep as many as the api's
	// default pool (database.max_idle_conns).
	e.SQL.SetMaxIdleConns(20)
	if o.MaxIdleConns > 0 {
		e.SQL.SetMaxIdleConns(o.MaxIdleConns)
	}
	e.SQL.SetMaxOpenConns(o.MaxOpenConns)
	t.Cleanup(func() { e.SQL.Close() })
	storetest.Migrate(t, e.SQL)
	e.DB, err = storetest.New(e.SQL)
	must(t, err)
	e.Store = e.DB.Store()
	e.Metrics.MustRegister(metrics.BacklogCollector{Store: e.Store, Log: e.Log})
	e.TaskQueue = o.TaskQueue
	if e.TaskQueue == "" {
		e.TaskQueue = "imprun-test-" + uuid.NewString()
	}
	if o.WithTemporal {
		e.TemporalServer = testharness.Temporal(t)
		e.Temporal.Set(e.TemporalServer.ClientWith(t, func(o *client.Options) { o.MetricsHandler = metrics.NewTemporal(e.Metrics) }))
	}
	issuerURL := o.IssuerURL
	if issuerURL == "" {
		issuerURL = e.Issuer.URL()
	}
	var hooks httpapi.Hooks
	if o.Hooks != nil {
		hooks = o.Hooks(e)
	}
	e.gatewayOptions = o.GatewayOptions
	if hooks.CatalogUsage == nil {
		hooks.CatalogUsage = store.PublishUsage{Store: e.Store}
	}
	settings := httpapi.Settings{TaskQueue: e.TaskQueue, PublishDeadline: o.PublishDeadline, ApprovalDeadline: o.ApprovalDeadline}
	if o.Agents != nil {
		e.timing = *o.Agents
		addr := o.AgentAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		e.Replica = e.StartReplica(t, addr)
		hooks.Agents = e.Replica.Gateway
		settings.SyncLimits = e.Replica.Gateway.SyncLimits()
	}
	e.API = httpapi.NewAPI(httpapi.Deps{
		Store: e.Store,
		Auth: httpapi.NewAuthenticator(httpapi.AuthConfig{
			IssuerURL: issuerURL, Audience: Audience, RolesClaim: "realm_access.roles", EmailClaim: "email",
		}),
		Temporal: e.Temporal,
		Hooks:    hooks,
		Settings: settings,
		Logger:   e.Log,
	})
	idCtx, stopIdentity := context.WithCancel(context.Background())
	idDone := make(chan struct{})
	go func() { e.API.ListenIdentityChanges(idCtx, e.DBURL); close(idDone) }()
	t.Cleanup(func() { stopIdentity(); <-idDone })
	// Wait for it: until it listens nothing is cached, and tests that count queries would
	// count a principal's load on some requests and not on others.
	for deadline := time.Now().Add(10 * time.Second); !e.API.IdentityListening(); {
		if time.Now().After(deadline) {
			t.Fatalf("apitest: the principal cache never listened for identity changes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv := httpapi.NewServer(httpapi.Options{BodyLimit: "64K", Register: e.API.Register, Logger: e.Log, Registry: e.Metrics,
		Checks: []httpapi.ReadyCheck{{Name: "postgres", Check: e.SQL.PingContext}}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	e.URL = "http://" + ln.Addr().String()
	e.router = openAPIRouter(t, e.URL)
	return e
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var docOnce struct {
	sync.Once
	doc *openapi3.T
	err error
}

// Document loads and validates the OpenAPI document once per test binary.
func Document(t testing.TB) *openapi3.T {
	t.Helper()
	docOnce.Do(func() {
		l := openapi3.NewLoader()
		docOnce.doc, docOnce.err = l.LoadFromData(httpapi.OpenAPIDocument())
		if docOnce.err == nil {
			docOnce.err = docOnce.doc.Validate(context.Background())
		}
	})
	if docOnce.err != nil {
		t.Fatalf("openapi document: %v", docOnce.err)
	}
	return docOnce.doc
}

func openAPIRouter(t testing.TB, base string) routers.Router {
	t.Helper()
	// A shallow copy with this server's URL, so the router matches requests to it.
	doc := *Document(t)
	doc.Servers = openapi3.Servers{{URL: base}}
	r, err := gorillamux.NewRouter(&doc)
	must(t, err)
	return r
}

// Persona is who a client acts as.
type Persona = devissuer.Persona

// Token returns a bearer token for p from the shared issuer.
func (e *Env) Token(p Persona) string {
	e.T.Helper()
	if p.Audience == "" {
		p.Audience = Audience
	}
	tok, err := e.Issuer.Token(p)
	must(e.T, err)
	return tok
}

// Client sends requests as one caller.
type Client struct {
	env    *Env
	token  string
	tenant string
	header http.Header
}

// As returns a client with a token for p.
func (e *Env) As(p Persona) *Client { return &Client{env: e, token: e.Token(p), header: http.Header{}} }

// Anonymous returns a client without a token.
func (e *Env) Anonymous() *Client { return &Client{env: e, header: http.Header{}} }

// WithToken returns a client that sends raw as its bearer token.
func (e *Env) WithToken(raw string) *Client {
	return &Client{env: e, token: raw, header: http.Header{}}
}

// InTenant returns a copy of the client that sends X-Tenant: slug.
func (c *Client) InTenant(slug string) *Client {
	cp := *c
	cp.tenant = slug
	return &cp
}

// WithHeader returns a copy of the client that sends an extra header.
func (c *Client) WithHeader(k, v string) *Client {
	cp := *c
	cp.header = c.header.Clone()
	cp.header.Set(k, v)
	return &cp
}

// Response is a checked response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	t      testing.TB
}

// JSON decodes the body into v.
func (r *Response) JSON(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		r.t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Map decodes the body as an object.
func (r *Response) Map() map[string]any {
	var m map[string]any
	r.JSON(&m)
	return m
}

// Problem decodes an error body.
func (r *Response) Problem() httpapi.Problem {
	var p httpapi.Problem
	r.JSON(&p)
	return p
}

// Get sends a GET.
func (c *Client) Get(path string) *Response { return c.Do(http.MethodGet, path, nil) }

// Post sends a POST with a JSON body.
func (c *Client) Post(path string, body any) *Response { return c.Do(http.MethodPost, path, body) }

// Patch sends a PATCH with a JSON body.
func (c *Client) Patch(path string, body any) *Response { return c.Do(http.MethodPatch, path, body) }

// Put sends a PUT with a JSON body.
func (c *Client) Put(path string, body any) *Response { return c.Do(http.MethodPut, path, body) }

// Delete sends a DELETE.
func (c *Client) Delete(path string) *Response { return c.Do(http.MethodDelete, path, nil) }

// Do sends a request; body may be nil, a string/[]byte (sent as is) or a value (JSON). The
// response is checked against the OpenAPI document before it is returned.
func (c *Client) Do(method, path string, body any) *Response {
	t := c.env.T
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		must(t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.env.URL+path, rd)
	must(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.tenant != "" {
		req.Header.Set("X-Tenant", c.tenant)
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	must(t, err)
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw, t: t}
	if err := c.env.checkResponse(req, r); err != nil {
		t.Fatalf("%s %s -> %d: response does not match the OpenAPI document: %v\nbody: %s", method, path, r.Status, err, raw)
	}
	return r
}

func (e *Env) checkResponse(req *http.Request, r *Response) error {
	// The router matches on the URL; a fresh request keeps the original body out of the way.
	u, _ := url.Parse(req.URL.String())
	mreq, _ := http.NewRequest(req.Method, u.String(), nil)
	mreq.Header = req.Header.Clone()
	route, params, err := e.router.FindRoute(mreq)
	if err != nil {
		return fmt.Errorf("no operation for %s %s in the document: %w", req.Method, req.URL.Path, err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: mreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  r.Status,
		Header:  r.Header,
		Body:    io.NopCloser(bytes.NewReader(r.Body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	return openapi3filter.ValidateResponse(context.Background(), in)
}

// Logs returns everything the env's components logged so far.
func (e *Env) Logs() string { return e.logs.String() }

// LockedBuffer is a buffer one goroutine may read while others write to it (a log sink, a
// command's output).
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
