package models

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/snapshot"
)

// Policy scopes, from the least to the most specific.
const (
	ScopeGlobal  = "global"
	ScopeService = "service"
	ScopeRoute   = "route"
)

// Policy types. Authentication is not a policy type: it comes from a publish's auth mode.
const (
	PolicyRateLimit      = "rate-limit"
	PolicyCORS           = "cors"
	PolicyHeaderModifier = "header-modifier"
	PolicyURLRewrite     = "url-rewrite"
	PolicyRetry          = "retry"
	PolicyTimeout        = "timeout"
	PolicyIPAllow        = "ip-allow"
	PolicyIPDeny         = "ip-deny"
)

// Policy categories, derived from the type.
const (
	CategorySecurity  = "security"
	CategoryTraffic   = "traffic"
	CategoryTransform = "transform"
)

// policyTypes maps each type to its category and a constructor of its spec, so a spec is always
// decoded into the one Go type that knows its fields.
var policyTypes = map[string]struct {
	category string
	spec     func() any
}{
	PolicyRateLimit:      {CategoryTraffic, func() any { return &RateLimitSpec{} }},
	PolicyCORS:           {CategorySecurity, func() any { return &CORSSpec{} }},
	PolicyHeaderModifier: {CategoryTransform, func() any { return &HeaderModifierSpec{} }},
	PolicyURLRewrite:     {CategoryTransform, func() any { return &URLRewriteSpec{} }},
	PolicyRetry:          {CategoryTraffic, func() any { return &RetrySpec{} }},
	PolicyTimeout:        {CategoryTraffic, func() any { return &TimeoutSpec{} }},
	PolicyIPAllow:        {CategorySecurity, func() any { return &IPListSpec{} }},
	PolicyIPDeny:         {CategorySecurity, func() any { return &IPListSpec{} }},
}

// PolicyTypes lists the known policy types, sorted.
func PolicyTypes() []string {
	out := make([]string, 0, len(policyTypes))
	for t := range policyTypes {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// PolicyCategory returns the category of a policy type ("" for an unknown type).
func PolicyCategory(policyType string) string { return policyTypes[policyType].category }

// NewPolicySpec returns a pointer to an empty spec of policyType, or false for an unknown type.
func NewPolicySpec(policyType string) (any, bool) {
	t, ok := policyTypes[policyType]
	if !ok {
		return nil, false
	}
	return t.spec(), true
}

// The specs whose canonical form is the shape agents decode are the snapshot's types: one
// definition for the API, the stored spec and the agents. The specs below them differ on purpose
// (the canonical form leaves unset parts out, or tells 0 from unset) and agents read them
// leniently through their own snapshot shapes.
type (
	// RateLimitSpec limits requests per unit of time (second, minute, hour, day), with a burst above it.
	RateLimitSpec = snapshot.RateLimitSpec
	// CORSSpec is a CORS policy.
	CORSSpec = snapshot.CORSSpec
	// HeaderValue is a header name and value.
	HeaderValue = snapshot.HeaderValue
	// HeaderOps changes headers: add appends, set replaces, remove deletes.
	HeaderOps = snapshot.HeaderOps
	// URLRewritePath rewrites the path: the whole of it (full) or the matched prefix (prefix).
	URLRewritePath = snapshot.URLRewritePath
	// IPListSpec is the client CIDRs of an ip-allow or ip-deny policy.
	IPListSpec = snapshot.IPListSpec
)

// HeaderModifierSpec changes request and/or response headers.
type HeaderModifierSpec struct {
	Request  *HeaderOps `json:"request,omitempty"`
	Response *HeaderOps `json:"response,omitempty"`
}

// URLRewriteSpec rewrites the host and/or the path before the request goes upstream.
type URLRewriteSpec struct {
	Hostname string          `json:"hostname,omitempty"`
	Path     *URLRewritePath `json:"path,omitempty"`
}

// RetrySpec retries failed upstream requests.
type RetrySpec struct {
	NumRetries      int      `json:"num_retries"`
	RetryOn         []string `json:"retry_on"`
	PerTryTimeoutMS int      `json:"per_try_timeout_ms,omitempty"`
}

// TimeoutSpec bounds a request end to end and the wait for the backend.
type TimeoutSpec struct {
	RequestMS        *int `json:"request_ms,omitempty"`
	BackendRequestMS *int `json:"backend_request_ms,omitempty"`
}

// Policy is a typed, validated piece of behaviour attached to the whole tenant (global), a
// service or a route. Spec is the canonical JSON of the type's spec struct.
type Policy struct {
	ID           uuid.UUID             `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID     uuid.UUID             `gorm:"type:uuid" json:"-"`
	Scope        string                `json:"scope"`
	APIServiceID *uuid.UUID            `gorm:"type:uuid" json:"api_service_id"`
	RouteID      *uuid.UUID            `gorm:"type:uuid" json:"route_id"`
	Name         string                `json:"name"`
	Description  string                `json:"description"`
	Type         string                `json:"type"`
	Category     string                `json:"category"`
	Spec         JSON[json.RawMessage] `gorm:"type:jsonb" json:"spec"`
	Priority     int                   `json:"priority"`
	Enabled      bool                  `json:"enabled"`
	CreatedAt    time.Time             `json:"created_at"`
	UpdatedAt    time.Time             `json:"updated_at"`
}

// TableName pins the table.
func (Policy) TableName() string { return "policies" }

// PageKey orders policies in lists.
func (p Policy) PageKey() (time.Time, uuid.UUID) { return p.CreatedAt, p.ID }

// EffectivePolicies resolves the policies that apply to one route from the enabled policies of
// the three scopes. For each policy type the most specific scope that has any enabled policy of
// that type wins whole (route over service over global): a route's rate-limit replaces the
// service's and the global one instead of adding to them. Within the winning scope every
// enabled policy of the type applies, higher priority first. Disabled policies are ignored, so
// disabling a route's policy lets the service's or global one apply again.
//
// The result is deterministic (type, then priority descending, then oldest first, then id),
// because the publish snapshot hashes it.
func EffectivePolicies(global, service, route []Policy) []Policy {
	winners := map[string][]Policy{}
	// Walk from the least to the most specific scope; a scope that has a type replaces what a
	// less specific one gave.
	for _, scope := range [][]Policy{global, service, route} {
		byType := map[string][]Policy{}
		for _, p := range scope {
			if p.Enabled {
				byType[p.Type] = append(byType[p.Type], p)
			}
		}
		for t, ps := range byType {
			winners[t] = ps
		}
	}
	out := []Policy{}
	for _, ps := range winners {
		out = append(out, ps...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case a.Type != b.Type:
			return a.Type < b.Type
		case a.Priority != b.Priority:
			return a.Priority > b.Priority
		case !a.CreatedAt.Equal(b.CreatedAt):
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.ID.String() < b.ID.String()
	})
	return out
}
