package agent

import (
	"encoding/json"
	"fmt"

	"github.com/imprun/imprun-server/snapshot"
)

// Snapshot is one publish revision as the agent renders it: the document the server serves
// (package snapshot, the one definition both sides use) and the revision it was fetched for.
// Decoding ignores unknown fields on purpose, so the server can add fields without breaking
// deployed agents.
type Snapshot struct {
	snapshot.Snapshot
	// Revision is not in the snapshot the server serves (its bytes must not depend on it, so a
	// rollback keeps the old checksum): the agent takes it from the DeployCommand. A snapshot
	// that does carry one must agree with the command.
	Revision int32 `json:"revision"`
}

// The parts of a snapshot, under the names the renderers use.
type (
	SnapshotProduct = snapshot.Product
	SnapshotGateway = snapshot.Gateway
	Listener        = snapshot.Listener
	APIService      = snapshot.APIService
	Route           = snapshot.Route
	RouteMatches    = snapshot.RouteMatches
	ValueMatch      = snapshot.ValueMatch
	BackendRef      = snapshot.BackendRef
	Backend         = snapshot.Backend
	Endpoint        = snapshot.Endpoint
	ConsistentHash  = snapshot.ConsistentHash
	HealthCheck     = snapshot.HealthCheck
	CircuitBreaker  = snapshot.CircuitBreaker
	BackendTLS      = snapshot.BackendTLS
	Policy          = snapshot.Policy
	// RetrySpec is the spec of a retry policy, which has the shape of a backend's own retry.
	RetrySpec = snapshot.Retry
)

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
