package agent

import (
	"encoding/json"
	"fmt"
)

// Snapshot is the JSON document the server serves for one publish revision: everything needed
// to render that publish for a gateway. Decoding ignores unknown fields on purpose, so the server
// can add fields without breaking deployed agents.
type Snapshot struct {
	PublishID string `json:"publish_id"`
	// Revision is not in the snapshot the server serves (its bytes must not depend on it, so a
	// rollback keeps the old checksum): the agent takes it from the DeployCommand. A snapshot
	// that does carry one must agree with the command.
	Revision int32 `json:"revision"`
	// TenantID is the publish's tenant (empty in snapshots from before servers sent it). A TLS
	// listener's certificate_ref names a certificate of this tenant only.
	TenantID    string          `json:"tenant_id"`
	Product     SnapshotProduct `json:"product"`
	ClusterID   string          `json:"cluster_id"`
	Environment string          `json:"environment"`
	// Hostname is the publish's base hostname, used for routes and listeners that name none.
	Hostname    string          `json:"hostname"`
	AuthMode    string          `json:"auth_mode"`
	AuthConfig  map[string]any  `json:"auth_config"`
	Gateway     SnapshotGateway `json:"gateway"`
	APIServices []APIService    `json:"api_services"`
}

// SnapshotProduct identifies the product behind a publish.
type SnapshotProduct struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// SnapshotGateway is the gateway template the publish is exposed through.
type SnapshotGateway struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	GatewayClass string     `json:"gateway_class"`
	Listeners    []Listener `json:"listeners"`
}

// Listener is one port of a gateway.
type Listener struct {
	Name     string `json:"name"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Hostname string `json:"hostname"`
	TLS      *struct {
		Mode           string `json:"mode"`
		CertificateRef string `json:"certificate_ref"`
	} `json:"tls"`
}

// APIService is one API of the published product, with its routes, backends and policies.
type APIService struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Routes   []Route   `json:"routes"`
	Backends []Backend `json:"backends"`
	// Policies are the service- and global-scoped policies; route-scoped ones sit on the route.
	Policies []Policy `json:"policies"`
}

// Route is one HTTP route of an API service.
type Route struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Hostnames   []string     `json:"hostnames"`
	Matches     RouteMatches `json:"matches"`
	BackendRefs []BackendRef `json:"backend_refs"`
	Priority    int          `json:"priority"`
	Timeouts    struct {
		RequestMS        int `json:"request_ms"`
		BackendRequestMS int `json:"backend_request_ms"`
	} `json:"timeouts"`
	Policies []Policy `json:"policies"`
}

// RouteMatches says which requests a route takes.
type RouteMatches struct {
	Path struct {
		Type  string `json:"type"` // prefix, exact or regex
		Value string `json:"value"`
	} `json:"path"`
	Methods     []string     `json:"methods"` // empty: every method
	Headers     []ValueMatch `json:"headers"`
	QueryParams []ValueMatch `json:"query_params"`
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

// Backend is an upstream service of an API service.
type Backend struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Scheme    string     `json:"scheme"`
	Endpoints []Endpoint `json:"endpoints"`
	LBPolicy  string     `json:"lb_policy"`
	// ConsistentHash says what a ConsistentHash lb_policy hashes on (nil: the client address).
	ConsistentHash *ConsistentHash `json:"consistent_hash"`
	Timeouts       struct {
		ConnectMS int `json:"connect_ms"`
		RequestMS int `json:"request_ms"`
		IdleMS    int `json:"idle_ms"`
	} `json:"timeouts"`
	HealthCheck    *HealthCheck    `json:"health_check"`
	CircuitBreaker *CircuitBreaker `json:"circuit_breaker"`
	// Retry is the backend's own retry behaviour; a route's retry policy replaces it.
	Retry *RetrySpec  `json:"retry"`
	TLS   *BackendTLS `json:"tls"`
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
	Type       string `json:"type"` // SourceIP, Header or Cookie
	HeaderName string `json:"header_name"`
	Cookie     *struct {
		Name       string `json:"name"`
		TTLSeconds int    `json:"ttl_seconds"`
	} `json:"cookie"`
}

// HealthCheck is an active health check of a backend's endpoints.
type HealthCheck struct {
	Type               string `json:"type"` // HTTP, TCP or GRPC
	Path               string `json:"path"`
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

// BackendTLS is TLS towards an https or grpcs backend.
type BackendTLS struct {
	SNI                string `json:"sni"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// Policy is a traffic or security policy; Spec depends on Type (rate-limit, cors, timeout,
// retry, ...). The server resolves policies per route (route over service over global) and
// lists the winners on the route with the scope they came from, higher priority first.
type Policy struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Type     string          `json:"type"`
	Scope    string          `json:"scope"` // global, service or route
	Priority int             `json:"priority"`
	Spec     json.RawMessage `json:"spec"`
}

// DecodeSnapshot parses snapshot bytes and checks the fields rendering cannot do without.
func DecodeSnapshot(data []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	if s.PublishID == "" {
		return nil, fmt.Errorf("decode snapshot: publish_id is missing")
	}
	if len(s.Gateway.Listeners) == 0 {
		return nil, fmt.Errorf("decode snapshot: gateway %q has no listeners", s.Gateway.Name)
	}
	return &s, nil
}

// RateLimitSpec is the spec of a rate-limit policy.
type RateLimitSpec struct {
	RequestsPerUnit int    `json:"requests_per_unit"`
	Unit            string `json:"unit"` // second, minute, hour or day
	Burst           int    `json:"burst"`
}

// CORSSpec is the spec of a cors policy.
type CORSSpec struct {
	AllowOrigins     []string `json:"allow_origins"`
	AllowMethods     []string `json:"allow_methods"`
	AllowHeaders     []string `json:"allow_headers"`
	ExposeHeaders    []string `json:"expose_headers"`
	MaxAgeSeconds    int      `json:"max_age_seconds"`
	AllowCredentials bool     `json:"allow_credentials"`
}

// RetrySpec is the spec of a retry policy (and a backend's own retry).
type RetrySpec struct {
	NumRetries      int      `json:"num_retries"`
	RetryOn         []string `json:"retry_on"`
	PerTryTimeoutMS int      `json:"per_try_timeout_ms"`
	Backoff         *struct {
		BaseIntervalMS int `json:"base_interval_ms"`
		MaxIntervalMS  int `json:"max_interval_ms"`
	} `json:"backoff"`
}

// HeaderValue is a header name and value.
type HeaderValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HeaderOps changes headers: add appends, set replaces, remove deletes.
type HeaderOps struct {
	Add    []HeaderValue `json:"add"`
	Set    []HeaderValue `json:"set"`
	Remove []string      `json:"remove"`
}

// HeaderModifierSpec is the spec of a header-modifier policy.
type HeaderModifierSpec struct {
	Request  *HeaderOps `json:"request"`
	Response *HeaderOps `json:"response"`
}

// URLRewriteSpec is the spec of a url-rewrite policy.
type URLRewriteSpec struct {
	Hostname string `json:"hostname"`
	Path     *struct {
		Type  string `json:"type"` // full or prefix
		Value string `json:"value"`
	} `json:"path"`
}

// IPListSpec is the spec of an ip-allow or ip-deny policy.
type IPListSpec struct {
	CIDRs []string `json:"cidrs"`
}

// TimeoutSpec is the spec of a timeout policy.
type TimeoutSpec struct {
	RequestMS        int `json:"request_ms"`
	BackendRequestMS int `json:"backend_request_ms"`
}
