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
	RetrySpec          = snapshot.Retry
	RateLimitSpec      = snapshot.RateLimitSpec
	CORSSpec           = snapshot.CORSSpec
	HeaderValue        = snapshot.HeaderValue
	HeaderOps          = snapshot.HeaderOps
	HeaderModifierSpec = snapshot.HeaderModifierSpec
	URLRewriteSpec     = snapshot.URLRewriteSpec
	IPListSpec         = snapshot.IPListSpec
	TimeoutSpec        = snapshot.TimeoutSpec
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
