package models

import (
	"database/sql/driver"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/snapshot"
)

// The provider's logical layer: API services with their routes, backends and policies, gateway
// templates, products and plans. None of it names a cluster: a ProductPublish joins a product,
// a gateway template and a cluster later.

// API service statuses.
const (
	ServiceActive   = "active"
	ServiceInactive = "inactive"
)

// Route statuses.
const (
	RouteActive   = "active"
	RouteInactive = "inactive"
	RouteDraft    = "draft"
)

// Backend statuses.
const (
	BackendActive   = "active"
	BackendInactive = "inactive"
)

// Gateway template statuses.
const (
	GatewayActive   = "active"
	GatewayInactive = "inactive"
)

// Product statuses: draft -> active (needs an active linked service) -> archived (final,
// read-only); active -> draft while nothing published uses it.
const (
	ProductDraft    = "draft"
	ProductActive   = "active"
	ProductArchived = "archived"
)

// Gateway classes a template may name.
const (
	GatewayClassEnvoy = "envoy-gateway"
	GatewayClassNginx = "nginx"
)

// Labels is a JSONB object of string labels; nil is stored and shown as {}.
type Labels map[string]string

// Value implements driver.Valuer.
func (l Labels) Value() (driver.Value, error) {
	if l == nil {
		return "{}", nil
	}
	b, err := json.Marshal(map[string]string(l))
	return string(b), err
}

// Scan implements sql.Scanner.
func (l *Labels) Scan(src any) error { return scanJSON(src, (*map[string]string)(l)) }

// MarshalJSON shows a nil map as {} so clients always get an object.
func (l Labels) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(l))
}

// APIService is a logical API: a named, versioned set of routes, backends and policies that
// belongs to no gateway and no cluster.
type APIService struct {
	ID          uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID    uuid.UUID `gorm:"type:uuid" json:"-"`
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Description string    `json:"description"`
	Labels      Labels    `gorm:"type:jsonb" json:"labels"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// TableName pins the table.
func (APIService) TableName() string { return "api_services" }

// PageKey orders services in lists.
func (s APIService) PageKey() (time.Time, uuid.UUID) { return s.CreatedAt, s.ID }

// Path match types of a route.
const (
	PathPrefix = "prefix"
	PathExact  = "exact"
	PathRegex  = "regex"
)

// PathMatch is one path a route matches; regex values are RE2 (Go and Envoy agree on it).
type PathMatch struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Header and query match types (Gateway API spelling).
const (
	MatchExact   = "Exact"
	MatchRegex   = "RegularExpression"
	MatchPresent = "Present"
)

// HeaderMatch matches a request header.
type HeaderMatch struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

// QueryParamMatch matches a query parameter.
type QueryParamMatch struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

// BackendRef sends a share of a route's traffic to a backend of the same service.
type BackendRef struct {
	BackendID uuid.UUID `json:"backend_id"`
	Weight    int       `json:"weight"`
}

// RouteTimeouts bound a request end to end and the wait for the backend.
type RouteTimeouts struct {
	RequestMS        *int `gorm:"column:timeout_request_ms" json:"request_ms"`
	BackendRequestMS *int `gorm:"column:timeout_backend_request_ms" json:"backend_request_ms"`
}

// Route is one HTTPRoute rule of a service.
type Route struct {
	ID           uuid.UUID               `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID     uuid.UUID               `gorm:"type:uuid" json:"-"`
	APIServiceID uuid.UUID               `gorm:"type:uuid" json:"api_service_id"`
	Name         string                  `json:"name"`
	Description  string                  `json:"description"`
	Hostnames    StringArray             `gorm:"type:text[]" json:"hostnames"`
	Paths        JSON[[]PathMatch]       `gorm:"type:jsonb" json:"paths"`
	Methods      StringArray             `gorm:"type:text[]" json:"methods"`
	Headers      JSON[[]HeaderMatch]     `gorm:"type:jsonb" json:"headers"`
	QueryParams  JSON[[]QueryParamMatch] `gorm:"type:jsonb" json:"query_params"`
	BackendRefs  JSON[[]BackendRef]      `gorm:"type:jsonb" json:"backend_refs"`
	Priority     int                     `json:"priority"`
	Tags         StringArray             `gorm:"type:text[]" json:"tags"`
	Timeouts     RouteTimeouts           `gorm:"embedded" json:"timeouts"`
	Status       string                  `json:"status"`
	CreatedAt    time.Time               `json:"created_at"`
	UpdatedAt    time.Time               `json:"updated_at"`
}

// TableName pins the table.
func (Route) TableName() string { return "routes" }

// PageKey orders routes in lists.
func (r Route) PageKey() (time.Time, uuid.UUID) { return r.CreatedAt, r.ID }

// Backend schemes.
const (
	SchemeHTTP  = "http"
	SchemeHTTPS = "https"
	SchemeGRPC  = "grpc"
	SchemeGRPCS = "grpcs"
)

// Load-balancing policies.
const (
	LBRoundRobin     = "RoundRobin"
	LBLeastRequest   = "LeastRequest"
	LBRandom         = "Random"
	LBConsistentHash = "ConsistentHash"
)

// BackendEndpoint is one upstream address.
type BackendEndpoint struct {
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Weight int    `json:"weight"`
	Zone   string `json:"zone"`
}

// ConsistentHash says what a ConsistentHash backend hashes on.
type ConsistentHash struct {
	Type       string                `json:"type"` // SourceIP, Header, Cookie
	HeaderName string                `json:"header_name,omitempty"`
	Cookie     *ConsistentHashCookie `json:"cookie,omitempty"`
}

// ConsistentHashCookie is the cookie a Cookie hash reads (and sets with ttl_seconds).
type ConsistentHashCookie struct {
	Name       string `json:"name"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"`
}

// HealthCheck is an active health check of a backend's endpoints.
type HealthCheck struct {
	Type               string `json:"type"` // HTTP, TCP, GRPC
	Path               string `json:"path,omitempty"`
	IntervalMS         int    `json:"interval_ms"`
	TimeoutMS          int    `json:"timeout_ms"`
	HealthyThreshold   int    `json:"healthy_threshold"`
	UnhealthyThreshold int    `json:"unhealthy_threshold"`
}

// A backend's circuit breaker, retry and TLS have the snapshot's shape: one definition, so the
// API's JSON of a backend and the agents' snapshot cannot drift apart.
type (
	// CircuitBreaker caps what a backend is sent; 0 keeps the proxy's default.
	CircuitBreaker = snapshot.CircuitBreaker
	// RetryBackoff spaces retries.
	RetryBackoff = snapshot.RetryBackoff
	// BackendRetry is the retry behaviour of a backend (a retry policy overrides it per route).
	BackendRetry = snapshot.Retry
	// BackendTLS is TLS towards the upstream (https and grpcs only).
	BackendTLS = snapshot.BackendTLS
)

// Backend is an upstream of a service that its routes send traffic to.
type Backend struct {
	ID               uuid.UUID               `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID         uuid.UUID               `gorm:"type:uuid" json:"-"`
	APIServiceID     uuid.UUID               `gorm:"type:uuid" json:"api_service_id"`
	Name             string                  `json:"name"`
	Description      string                  `json:"description"`
	Scheme           string                  `json:"scheme"`
	Endpoints        JSON[[]BackendEndpoint] `gorm:"type:jsonb" json:"endpoints"`
	LBPolicy         string                  `gorm:"column:lb_policy" json:"lb_policy"`
	ConsistentHash   JSON[*ConsistentHash]   `gorm:"type:jsonb" json:"consistent_hash"`
	ConnectTimeoutMS *int                    `gorm:"column:connect_timeout_ms" json:"connect_timeout_ms"`
	TimeoutMS        *int                    `gorm:"column:timeout_ms" json:"timeout_ms"`
	IdleTimeoutMS    *int                    `gorm:"column:idle_timeout_ms" json:"idle_timeout_ms"`
	HealthCheck      JSON[*HealthCheck]      `gorm:"type:jsonb" json:"health_check"`
	CircuitBreaker   JSON[*CircuitBreaker]   `gorm:"type:jsonb" json:"circuit_breaker"`
	Retry            JSON[*BackendRetry]     `gorm:"type:jsonb" json:"retry"`
	TLS              JSON[*BackendTLS]       `gorm:"column:tls;type:jsonb" json:"tls"`
	Status           string                  `json:"status"`
	CreatedAt        time.Time               `json:"created_at"`
	UpdatedAt        time.Time               `json:"updated_at"`
}

// TableName pins the table.
func (Backend) TableName() string { return "backends" }

// PageKey orders backends in lists.
func (b Backend) PageKey() (time.Time, uuid.UUID) { return b.CreatedAt, b.ID }

// Listener protocols.
const (
	ProtocolHTTP  = "HTTP"
	ProtocolHTTPS = "HTTPS"
	ProtocolTCP   = "TCP"
	ProtocolTLS   = "TLS"
)

// Listener TLS modes.
const (
	TLSTerminate   = "Terminate"
	TLSPassthrough = "Passthrough"
)

// CertificateRef names a certificate secret in the cluster the template is published to.
type CertificateRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// ListenerTLS is the TLS setting of an HTTPS or TLS listener.
type ListenerTLS struct {
	Mode            string           `json:"mode"`
	CertificateRefs []CertificateRef `json:"certificate_refs"`
}

// GatewayListener is one port a gateway template opens.
type GatewayListener struct {
	Name     string       `json:"name"`
	Port     int          `json:"port"`
	Protocol string       `json:"protocol"`
	Hostname string       `json:"hostname,omitempty"`
	TLS      *ListenerTLS `json:"tls,omitempty"`
}

// Gateway is a template saying how to expose products (class, listeners), not where.
type Gateway struct {
	ID           uuid.UUID               `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID     uuid.UUID               `gorm:"type:uuid" json:"-"`
	Name         string                  `json:"name"`
	Description  string                  `json:"description"`
	GatewayClass string                  `json:"gateway_class"`
	Listeners    JSON[[]GatewayListener] `gorm:"type:jsonb" json:"listeners"`
	Labels       Labels                  `gorm:"type:jsonb" json:"labels"`
	Status       string                  `json:"status"`
	CreatedAt    time.Time               `json:"created_at"`
	UpdatedAt    time.Time               `json:"updated_at"`
}

// TableName pins the table.
func (Gateway) TableName() string { return "gateways" }

// PageKey orders gateways in lists.
func (g Gateway) PageKey() (time.Time, uuid.UUID) { return g.CreatedAt, g.ID }

// Product is what customers subscribe to: a set of API services, sold through plans.
type Product struct {
	ID          uuid.UUID   `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID    uuid.UUID   `gorm:"type:uuid" json:"-"`
	Name        string      `json:"name"`
	Version     string      `json:"version"`
	Description string      `json:"description"`
	Categories  StringArray `gorm:"type:text[]" json:"categories"`
	DocsURL     string      `gorm:"column:docs_url" json:"docs_url"`
	LogoURL     string      `gorm:"column:logo_url" json:"logo_url"`
	Status      string      `json:"status"`
	// APIServices are the linked services in the order given; kept in product_api_services.
	APIServices []uuid.UUID `gorm:"-" json:"api_services"`
	CreatedAt   time.Time   `json:"created_at"`
	UpdatedAt   time.Time   `json:"updated_at"`
}

// TableName pins the table.
func (Product) TableName() string { return "products" }

// PageKey orders products in lists.
func (p Product) PageKey() (time.Time, uuid.UUID) { return p.CreatedAt, p.ID }

// Plan rate-limit periods and quota periods.
const (
	PeriodSecond = "second"
	PeriodMinute = "minute"
	PeriodHour   = "hour"
	PeriodDay    = "day"
	PeriodMonth  = "month"
)

// PlanRateLimit is requests per period for one subscriber.
type PlanRateLimit struct {
	Requests int    `json:"requests"`
	Period   string `json:"period"`
}

// PlanQuota is the total requests one subscriber may make per day or month.
type PlanQuota struct {
	Requests int    `json:"requests"`
	Period   string `json:"period"`
}

// Plan is a way to subscribe to a product: its limits.
type Plan struct {
	ID          uuid.UUID           `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID    uuid.UUID           `gorm:"type:uuid" json:"-"`
	ProductID   uuid.UUID           `gorm:"type:uuid" json:"product_id"`
	Name        string              `json:"name"`
	Description string              `json:"description"`
	RateLimit   JSON[PlanRateLimit] `gorm:"type:jsonb" json:"rate_limit"`
	Quota       JSON[*PlanQuota]    `gorm:"type:jsonb" json:"quota"`
	// IsDefault marks the plan a subscription gets when it names none (at most one per
	// product).
	IsDefault bool      `json:"is_default"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// TableName pins the table.
func (Plan) TableName() string { return "plans" }

// PageKey orders plans in lists.
func (p Plan) PageKey() (time.Time, uuid.UUID) { return p.CreatedAt, p.ID }

// Certificate is a certificate a tenant registered for its gateway templates to name: the
// secret (name, namespace) in the clusters it publishes to, or for the nginx data plane the
// file of that name in the agent's per-tenant certificate directory. Key material never passes
// through the API.
type Certificate struct {
	ID          uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID    uuid.UUID `gorm:"type:uuid" json:"-"`
	Name        string    `json:"name"`
	Namespace   string    `json:"namespace"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// TableName is the certificates' table.
func (Certificate) TableName() string { return "tenant_certificates" }

// PageKey orders certificates in lists.
func (c Certificate) PageKey() (time.Time, uuid.UUID) { return c.CreatedAt, c.ID }
