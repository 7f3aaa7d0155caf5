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
	// RetryAfter is, for a refusal over a limit, how long until the limit's window reopens
	// (zero for a quota over the life of the grant, which never reopens).
	RetryAfter time.Duration
}

// Verifier answers locally, from the credential set the server pushed, whether a presented
// credential may call a publish now. It counts allowed requests (fixed windows per credential
// and publish, plus the quota's count over its period), so limits hold per agent: a cluster with
// N agents admits up to N times a plan's rate. That is the price of answering without a round
// trip to the control plane. With WithCounterFile the counts survive a restart of the agent
// (Flush writes them; what was counted after the last flush is lost in a crash).
type Verifier struct {
	store *CredentialStore
	now   func() time.Time
	usage *usageLog // nil: uses are not reported
	// decided, when set, sees every decision Handler answers (the agent's metrics).
	decided func(Decision)
	file    string // counters file; "" keeps counts in memory only

	mu       sync.Mutex
	counters map[string]*usage // credential id + "/" + publish id
	dirty    bool
}

// usage is the request count of one credential on one publish.
type usage struct {
	Windows    [4]window `json:"windows"`     // second, minute, hour, day
	Total      int64     `json:"total"`       // allowed requests in the quota period
	QuotaStart time.Time `json:"quota_start"` // start of the quota period Total counts (zero: the grant's life)
}

type window struct {
	Start time.Time `json:"start"`
	Count int64     `json:"count"`
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

func withDecisions(f func(Decision)) VerifierOption {
	return func(v *Verifier) { v.decided = f }
}

// WithCounterFile keeps the Verifier's counts in path: loaded now, written by Flush.
func WithCounterFile(path string) VerifierOption {
	return func(v *Verifier) { v.file = path }
}

// NewVerifier returns a Verifier over store. A counter file that cannot be read is reported by
// the error of LoadCounters; NewVerifier starts from zero counts then.
func NewVerifier(store *CredentialStore, opts ...VerifierOption) *Verifier {
	v := &Verifier{store: store, now: time.Now, counters: map[string]*usage{}}
	for _, o := range opts {
		o(v)
	}
	if v.file != "" {
		_ = readJSON(v.file, &v.counters)
		if v.counters == nil {
			v.counters = map[string]*usage{}
		}
	}
	return v
}

// Flush writes the counts to the counter file when they changed since the last Flush.
func (v *Verifier) Flush() error {
	if v.file == "" {
		return nil
	}
	v.mu.Lock()
	if !v.dirty {
		v.mu.Unlock()
		return nil
	}
	snapshot := make(map[string]usage, len(v.counters))
	for k, u := range v.counters {
		snapshot[k] = *u
	}
	v.dirty = false
	v.mu.Unlock()
	if err := writeJSON(v.file, snapshot); err != nil {
		v.mu.Lock()
		v.dirty = true
		v.mu.Unlock()
		return err
	}
	return nil
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
	if reason, retry, ok := v.count(cred.ID+"/"+publishID, grant.Limits, now); !ok {
		d.Reason, d.RetryAfter = reason, retry
		return d
	}
	d.Allowed = true
	if v.usage != nil {
		v.usage.record(cred.ID, now)
	}
	return d
}

// count admits one request against limits, or says which limit refuses it and when it
// reopens. A refused request is not counted, so a client that backs off gets its full allowance
// in the next window.
func (v *Verifier) count(key string, limits PlanLimits, now time.Time) (DenyReason, time.Duration, bool) {
	perWindow := [4]int64{limits.RequestsPerSecond, limits.RequestsPerMinute, limits.RequestsPerHour, limits.RequestsPerDay}

	v.mu.Lock()
	defer v.mu.Unlock()
	u := v.counters[key]
	if u == nil {
		u = &usage{}
		v.counters[key] = u
	}
	if limits.Quota > 0 {
		start, end := quotaPeriod(limits.QuotaPeriod, now)
		if !u.QuotaStart.Equal(start) {
			u.QuotaStart, u.Total = start, 0
		}
		if u.Total >= limits.Quota {
			var retry time.Duration
			if !end.IsZero() {
				retry = end.Sub(now)
			}
			return DenyQuotaExceeded, retry, false
		}
	}
	for i, size := range windowSizes {
		// Truncate works on absolute time, so day windows are UTC days.
		start := now.Truncate(size)
		if !u.Windows[i].Start.Equal(start) {
			u.Windows[i] = window{Start: start}
		}
		if perWindow[i] > 0 && u.Windows[i].Count >= perWindow[i] {
			return windowReasons[i], start.Add(size).Sub(now), false
		}
	}
	for i := range u.Windows {
		u.Windows[i].Count++
	}
	u.Total++
	v.dirty = true
	return "", 0, true
}

// quotaPeriod is the UTC period a quota counts over at now: a calendar day or month, or the
// grant's whole life (zero times) for any other period.
func quotaPeriod(period string, now time.Time) (start, end time.Time) {
	now = now.UTC()
	switch period {
	case QuotaDay:
		start = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	case QuotaMonth:
		start = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	return time.Time{}, time.Time{}
}
