package snapshot

// The specs of the policy types agents render, as a Policy's Spec holds them. The server writes
// each spec in its canonical form (package models validates and normalises it); these are the
// shapes agents decode it into (TestSnapshotSharedShape in package store holds the two
// together). A retry policy's spec has the shape of a backend's own retry (Retry). A policy
// type missing here is one agents skip.

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
	Hostname string          `json:"hostname"`
	Path     *URLRewritePath `json:"path"`
}

// URLRewritePath rewrites the whole path (full) or the route's matched prefix (prefix).
type URLRewritePath struct {
	Type  string `json:"type"` // full or prefix
	Value string `json:"value"`
}

// IPListSpec is the spec of an ip-allow or ip-deny policy.
type IPListSpec struct {
	CIDRs []string `json:"cidrs"`
}

// TimeoutSpec is the spec of a timeout policy; 0 is unset.
type TimeoutSpec struct {
	RequestMS        int `json:"request_ms"`
	BackendRequestMS int `json:"backend_request_ms"`
}
