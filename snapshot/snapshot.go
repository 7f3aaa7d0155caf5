// Package snapshot is the one definition of the publish snapshot: the JSON document the server
// freezes for a publish revision (store.BuildSnapshot builds values of these types) and agents
// fetch, verify by SHA-256 and render (the agent decodes into them).
//
// The bytes are part of the contract: agents verify a revision's checksum, and a rollback
// serves an older revision's bytes again. So the field order, the tags and every omitempty here
// decide the checksum of what the server builds; change them only together with the server's
// golden and checksum tests. The document holds no revision number (a rollback that copies an
// older revision's bytes keeps its checksum); the agent takes the revision from the
// DeployCommand.
//
// Like the proto, the package depends on nothing but the standard library, so the agent can
// share it without importing the server.
package snapshot

import "encoding/json"

// Snapshot is everything needed to render one publish revision for a gateway, with every policy
// already resolved per route. Agents decode it ignoring unknown fields, so the server can add
// fields without breaking deployed agents.
type Snapshot struct {
	PublishID string `json:"publish_id"`
	// TenantID is the publish's tenant (empty in snapshots from before servers sent it). A TLS
	// listener's certificate_ref names a certificate of this tenant only, so renderers place
	// its certificates apart from every other tenant's.
	TenantID    string  `json:"tenant_id"`
	Product     Product `json:"product"`
	ClusterID   string  `json:"cluster_id"`
	Environment string  `json:"environment"`
	// Hostname is the publish's base hostname, used for routes and listeners that name none.
	Hostname string `json:"hostname"`
	AuthMode string `json:"auth_mode"`
	// AuthConfig is never null in what the server builds ({} when the publish has none).
	AuthConfig  map[string]any `json:"auth_config"`
	Gateway     Gateway        `json:"gateway"`
	APIServices []APIService   `json:"api_services"`
}

// Product identifies the product behind a publish.
type Product struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Gateway is the gateway template the publish is exposed through.
type Gateway struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	GatewayClass string     `json:"gateway_class"`
	Listeners    []Listener `json:"listeners"`
}

// Listener is one port of a gateway.
type Listener struct {
	Name     string       `json:"name"`
	Port     int          `json:"port"`
	Protocol string       `json:"protocol"`
	Hostname string       `json:"hostname"`
	TLS      *ListenerTLS `json:"tls,omitempty"`
}

// ListenerTLS is the TLS setting of an HTTPS or TLS listener: the template's first certificate
// reference only.
type ListenerTLS struct {
	Mode           string `json:"mode"`
	CertificateRef string `json:"certificate_ref"`
}

// APIService is one API of the published product, with its routes, backends and policies.
type APIService struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Routes   []Route   `json:"routes"`
	Backends []Backend `json:"backends"`
	// Policies are service- and global-scoped policies. The server sends none here (it
	// resolves policies per route and lists the winners on the route); hand-written snapshots
	// may use it.
	Policies []Policy `json:"policies"`
}

// Route is one HTTP route of an API service. The server turns a catalog route with several
// paths into one Route per path (the first keeps the route's name, the others get "-2", "-3").
type Route struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Hostnames   []string      `json:"hostnames"`
	Matches     RouteMatches  `json:"matches"`
	BackendRefs []BackendRef  `json:"backend_refs"`
	Priority    int           `json:"priority"`
	Timeouts    RouteTimeouts `json:"timeouts"`
	// Policies are the route's effective policies (route over service over global), with the
	// scope each came from, higher priority first.
	Policies []Policy `json:"policies"`
}

// RouteMatches says which requests a route takes.
type RouteMatches struct {
	Path        PathMatch    `json:"path"`
	Methods     []string     `json:"methods"` // empty: every method
	Headers     []ValueMatch `json:"headers"`
	QueryParams []ValueMatch `json:"query_params"`
}

// PathMatch matches the request path.
type PathMatch struct {
	Type  string `json:"type"` // prefix, exact or regex
	Value string `json:"value"`
}

// ValueMatch matches one header or query parameter.
type ValueMatch struct {
	Name  string `json:"name"`
	Type  string `json:"type"` // Exact, RegularExpression or Present
	Value string `json:"value"`
}

// BackendRef sends a share of a route's traffic to a backend.
type BackendRef struct {
	BackendID   string `json:"backend_id"`
	BackendName string `json:"backend_name"`
	Weight      int    `json:"weight"`
}

// RouteTimeouts bound a request end to end and the wait for the backend; 0 is unset.
type RouteTimeouts struct {
	RequestMS        int `json:"request_ms"`
	BackendRequestMS int `json:"backend_request_ms"`
}

// Backend is an upstream service of an API service.
type Backend struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Scheme    string     `json:"scheme"`
	Endpoints []Endpoint `json:"endpoints"`
	LBPolicy  string     `json:"lb_policy"`
	// ConsistentHash says what a ConsistentHash lb_policy hashes on (nil: the client address).
	ConsistentHash *ConsistentHash `json:"consistent_hash,omitempty"`
	Timeouts       BackendTimeouts `json:"timeouts"`
	HealthCheck    *HealthCheck    `json:"health_check,omitempty"`
	CircuitBreaker *CircuitBreaker `json:"circuit_breaker,omitempty"`
	// Retry is the backend's own retry behaviour; a route's retry policy replaces it.
	Retry *Retry      `json:"retry,omitempty"`
	TLS   *BackendTLS `json:"tls,omitempty"`
}

// Endpoint is one address of a backend.
type Endpoint struct {
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Weight int    `json:"weight"`
	Zone   string `json:"zone"`
}

// ConsistentHash is the hash key of a ConsistentHash backend.
type ConsistentHash struct {
	Type       string      `json:"type"` // SourceIP, Header or Cookie
	HeaderName string      `json:"header_name,omitempty"`
	Cookie     *HashCookie `json:"cookie,omitempty"`
}

// HashCookie is the cookie a Cookie hash reads (and sets with ttl_seconds).
type HashCookie struct {
	Name       string `json:"name"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"`
}

// BackendTimeouts are a backend's connect, request and idle timeouts; 0 is unset.
type BackendTimeouts struct {
	ConnectMS int `json:"connect_ms"`
	RequestMS int `json:"request_ms"`
	IdleMS    int `json:"idle_ms"`
}

// HealthCheck is an active health check of a backend's endpoints.
type HealthCheck struct {
	Type               string `json:"type"` // HTTP, TCP or GRPC
	Path               string `json:"path,omitempty"`
	IntervalMS         int    `json:"interval_ms"`
	TimeoutMS          int    `json:"timeout_ms"`
	HealthyThreshold   int    `json:"healthy_threshold"`
	UnhealthyThreshold int    `json:"unhealthy_threshold"`
}

// CircuitBreaker caps what a backend is sent; 0 keeps the proxy's default.
type CircuitBreaker struct {
	MaxConnections      int `json:"max_connections"`
	MaxPendingRequests  int `json:"max_pending_requests"`
	MaxParallelRequests int `json:"max_parallel_requests"`
	MaxParallelRetries  int `json:"max_parallel_retries"`
}

// Retry is a backend's retry behaviour; a retry policy's spec has the same shape.
type Retry struct {
	NumRetries      int           `json:"num_retries"`
	RetryOn         []string      `json:"retry_on"`
	PerTryTimeoutMS int           `json:"per_try_timeout_ms,omitempty"`
	Backoff         *RetryBackoff `json:"backoff,omitempty"`
}

// RetryBackoff spaces retries.
type RetryBackoff struct {
	BaseIntervalMS int `json:"base_interval_ms"`
	MaxIntervalMS  int `json:"max_interval_ms"`
}

// BackendTLS is TLS towards an https or grpcs backend.
type BackendTLS struct {
	SNI                string `json:"sni,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// Policy is a traffic or security policy; Spec depends on Type (rate-limit, cors, timeout,
// retry, ...) and is the catalog's spec as stored.
type Policy struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Type     string          `json:"type"`
	Scope    string          `json:"scope"` // global, service or route
	Priority int             `json:"priority"`
	Spec     json.RawMessage `json:"spec"`
}
