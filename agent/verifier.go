package agent

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// DenyReason says why a Verifier refused a request. The values are stable: gateways and the
// `agent verify` command print them.
type DenyReason string

// Reasons a request is refused.
const (
	DenyMalformed         DenyReason = "malformed_credential"
	DenyUnknown           DenyReason = "unknown_credential"
	DenySecretMismatch    DenyReason = "secret_mismatch"
	DenyRevoked           DenyReason = "revoked"
	DenyExpired           DenyReason = "expired"
	DenyNoGrant           DenyReason = "no_grant_for_publish"
	DenyRateLimitedSecond DenyReason = "rate_limited_per_second"
	DenyRateLimitedMinute DenyReason = "rate_limited_per_minute"
	DenyRateLimitedHour   DenyReason = "rate_limited_per_hour"
	DenyRateLimitedDay    DenyReason = "rate_limited_per_day"
	DenyQuotaExceeded     DenyReason = "quota_exceeded"
)

// Decision is the Verifier's answer for one request.
type Decision struct {
	Allowed bool
	// Reason is set when Allowed is false.
	Reason DenyReason
	// CredentialID and PlanID identify what matched (set once the secret matched).
	CredentialID string
	PlanID       string
}

// Verifier answers locally, from the credential set the server pushed, whether a presented
// credential may call a publish now. It counts allowed requests in memory (fixed windows per
// credential and publish, plus a running total for the quota), so limits hold per agent process:
// a cluster with N agents admits up to N times a plan's rate, and counters restart with the
// process. That is the price of answering without a round trip to the control plane.
type Verifier struct {
	store *CredentialStore
	now   func() time.Time
	usage *usageLog // nil: uses are not reported

	mu       sync.Mutex
	counters map[string]*usage // credential id + "/" + publish id
}

// usage is the request count of one credential on one publish.
type usage struct {
	windows [4]window // second, minute, hour, day
	total   int64     // every allowed request, for the quota
}

type window struct {
	start time.Time
	count int64
}

var windowSizes = [4]time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour}

var windowReasons = [4]DenyReason{DenyRateLimitedSecond, DenyRateLimitedMinute, DenyRateLimitedHour, DenyRateLimitedDay}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithClock makes the Verifier read time from now (tests use a fake clock).
func WithClock(now func() time.Time) VerifierOption {
	return func(v *Verifier) { v.now = now }
}

// withUsage makes the Verifier note every allowed request in l, which the agent's heartbeats
// report to the server (a credential's last-used time).
func withUsage(l *usageLog) VerifierOption {
	return func(v *Verifier) { v.usage = l }
}

// NewVerifier returns a Verifier over store.
func NewVerifier(store *CredentialStore, opts ...VerifierOption) *Verifier {
	v := &Verifier{store: store, now: time.Now, counters: map[string]*usage{}}
	for _, o := range opts {
		o(v)
	}
	return v
}

// VerifyAPIKey checks an API key ("imp_<prefix>.<secret>") against a publish and, when allowed,
// counts the request.
func (v *Verifier) VerifyAPIKey(publishID, key string) Decision {
	prefix, secret, ok := strings.Cut(key, ".")
	if !ok || prefix == "" || secret == "" || !strings.HasPrefix(prefix, "imp_") {
		return Decision{Reason: DenyMalformed}
	}
	return v.verify(publishID, CredentialAPIKey, prefix, secret)
}

// VerifyOAuthClient checks an OAuth client id and secret against a publish and, when allowed,
// counts the request.
func (v *Verifier) VerifyOAuthClient(publishID, clientID, clientSecret string) Decision {
	if clientID == "" || clientSecret == "" {
		return Decision{Reason: DenyMalformed}
	}
	return v.verify(publishID, CredentialOAuthClient, clientID, clientSecret)
}

func (v *Verifier) verify(publishID, typ, prefix, secret string) Decision {
	sum := sha256.Sum256([]byte(secret))
	presented := []byte(hex.EncodeToString(sum[:]))

	// A prefix is random but short, so in principle two credentials may share one; the secret
	// decides which (if any) was presented.
	var cred *Credential
	for _, c := range v.store.byPrefix(prefix) {
		if c.Type != typ {
			continue
		}
		if subtle.ConstantTimeCompare(presented, []byte(c.SecretHash)) == 1 {
			c := c
			cred = &c
			break
		}
	}
	if cred == nil {
		if len(v.store.byPrefix(prefix)) == 0 {
			return Decision{Reason: DenyUnknown}
		}
		return Decision{Reason: DenySecretMismatch}
	}

	now := v.now()
	d := Decision{CredentialID: cred.ID}
	switch {
	case cred.Revoked:
		d.Reason = DenyRevoked
		return d
	case cred.ExpiresAt != nil && !now.Before(*cred.ExpiresAt):
		d.Reason = DenyExpired
		return d
	}
	grant, ok := cred.grantFor(publishID)
	if !ok {
		d.Reason = DenyNoGrant
		return d
	}
	d.PlanID = grant.PlanID
	if reason, ok := v.count(cred.ID+"/"+publishID, grant.Limits, now); !ok {
		d.Reason = reason
		return d
	}
	d.Allowed = true
	if v.usage != nil {
		v.usage.record(cred.ID, now)
	}
	return d
}

// count admits one request against limits, or says which limit refuses it. A refused request
// is not counted, so a client that backs off gets its full allowance in the next window.
func (v *Verifier) count(key string, limits PlanLimits, now time.Time) (DenyReason, bool) {
	perWindow := [4]int64{limits.RequestsPerSecond, limits.RequestsPerMinute, limits.RequestsPerHour, limits.RequestsPerDay}

	v.mu.Lock()
	defer v.mu.Unlock()
	u := v.counters[key]
	if u == nil {
		u = &usage{}
		v.counters[key] = u
	}
	if limits.Quota > 0 && u.total >= limits.Quota {
		return DenyQuotaExceeded, false
	}
	for i, size := range windowSizes {
		// Truncate works on absolute time, so day windows are UTC days.
		start := now.Truncate(size)
		if !u.windows[i].start.Equal(start) {
			u.windows[i] = window{start: start}
		}
		if perWindow[i] > 0 && u.windows[i].count >= perWindow[i] {
			return windowReasons[i], false
		}
	}
	for i := range u.windows {
		u.windows[i].count++
	}
	u.total++
	return "", true
}
