package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for limit windows.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestVerifier(t *testing.T, creds ...Credential) (*Verifier, *fakeClock) {
	t.Helper()
	s, err := OpenCredentialStore(t.TempDir())
	require.NoError(t, err)
	for _, c := range creds {
		require.NoError(t, s.Upsert(c))
	}
	clock := &fakeClock{t: time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)}
	return NewVerifier(s, WithClock(clock.now)), clock
}

func TestVerifierDecisions(t *testing.T) {
	t.Parallel()
	expired := time.Date(2030, 4, 1, 0, 0, 0, 0, time.UTC)
	future := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	good := apiKeyCredential("good", 1, "imp_good0001", "s3cret", Grant{PublishID: "pub-1", PlanID: "gold"})
	good.ExpiresAt = &future
	old := apiKeyCredential("old", 1, "imp_old00001", "s3cret", Grant{PublishID: "pub-1", PlanID: "gold"})
	old.ExpiresAt = &expired
	revoked := apiKeyCredential("revoked", 1, "imp_revk0001", "s3cret", Grant{PublishID: "pub-1"})
	oauth := Credential{ID: "oauth", Version: 1, Type: CredentialOAuthClient, KeyPrefix: "client-1", SecretHash: sha("client-secret"), Grants: []Grant{{PublishID: "pub-1", PlanID: "silver"}}}

	v, _ := newTestVerifier(t, good, old, revoked, oauth)
	require.NoError(t, v.store.Revoke("revoked", 2, "rotated"))

	tests := []struct {
		name    string
		publish string
		key     string
		want    Decision
	}{
		{"valid key", "pub-1", "imp_good0001.s3cret", Decision{Allowed: true, CredentialID: "good", PlanID: "gold"}},
		{"wrong secret", "pub-1", "imp_good0001.guess", Decision{Reason: DenySecretMismatch}},
		{"unknown prefix", "pub-1", "imp_nope0001.s3cret", Decision{Reason: DenyUnknown}},
		{"no dot", "pub-1", "imp_good0001", Decision{Reason: DenyMalformed}},
		{"not an imp key", "pub-1", "abc.def", Decision{Reason: DenyMalformed}},
		{"empty secret", "pub-1", "imp_good0001.", Decision{Reason: DenyMalformed}},
		{"expired", "pub-1", "imp_old00001.s3cret", Decision{Reason: DenyExpired, CredentialID: "old"}},
		{"revoked", "pub-1", "imp_revk0001.s3cret", Decision{Reason: DenyRevoked, CredentialID: "revoked"}},
		{"no grant for publish", "pub-2", "imp_good0001.s3cret", Decision{Reason: DenyNoGrant, CredentialID: "good"}},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, v.VerifyAPIKey(tc.publish, tc.key), tc.name)
	}

	assert.Equal(t, Decision{Allowed: true, CredentialID: "oauth", PlanID: "silver"}, v.VerifyOAuthClient("pub-1", "client-1", "client-secret"))
	assert.Equal(t, DenySecretMismatch, v.VerifyOAuthClient("pub-1", "client-1", "wrong").Reason)
	assert.Equal(t, DenyMalformed, v.VerifyOAuthClient("pub-1", "client-1", "").Reason)
	// An API key's secret is not accepted as an OAuth client's and vice versa.
	assert.Equal(t, DenySecretMismatch, v.VerifyOAuthClient("pub-1", "imp_good0001", "s3cret").Reason)
}

func TestVerifierLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		limits PlanLimits
		// allowed is how many requests in a burst pass before denied; then, after advance,
		// whether the next one passes again.
		allowed int
		reason  DenyReason
		advance time.Duration
		reopens bool
	}{
		{"per second", PlanLimits{RequestsPerSecond: 3}, 3, DenyRateLimitedSecond, time.Second, true},
		{"per minute", PlanLimits{RequestsPerMinute: 2}, 2, DenyRateLimitedMinute, time.Minute, true},
		{"per hour", PlanLimits{RequestsPerHour: 4}, 4, DenyRateLimitedHour, time.Hour, true},
		{"per day", PlanLimits{RequestsPerDay: 1}, 1, DenyRateLimitedDay, 24 * time.Hour, true},
		{"quota never reopens", PlanLimits{Quota: 5}, 5, DenyQuotaExceeded, 48 * time.Hour, false},
		{"tightest limit wins", PlanLimits{RequestsPerSecond: 10, RequestsPerMinute: 2}, 2, DenyRateLimitedMinute, time.Minute, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := apiKeyCredential("c", 1, "imp_lim00001", "s", Grant{PublishID: "pub-1", PlanID: "p", Limits: tc.limits})
			v, clock := newTestVerifier(t, c)
			for i := 0; i < tc.allowed; i++ {
				require.True(t, v.VerifyAPIKey("pub-1", "imp_lim00001.s").Allowed, "request %d", i)
			}
			d := v.VerifyAPIKey("pub-1", "imp_lim00001.s")
			assert.False(t, d.Allowed)
			assert.Equal(t, tc.reason, d.Reason)
			clock.advance(tc.advance)
			assert.Equal(t, tc.reopens, v.VerifyAPIKey("pub-1", "imp_lim00001.s").Allowed)
		})
	}
}

func TestVerifierCountsPerPublish(t *testing.T) {
	t.Parallel()
	limits := PlanLimits{RequestsPerMinute: 1}
	c := apiKeyCredential("c", 1, "imp_two00001", "s", Grant{PublishID: "a", Limits: limits}, Grant{PublishID: "b", Limits: limits})
	v, _ := newTestVerifier(t, c)
	assert.True(t, v.VerifyAPIKey("a", "imp_two00001.s").Allowed)
	assert.True(t, v.VerifyAPIKey("b", "imp_two00001.s").Allowed, "another publish has its own window")
	assert.False(t, v.VerifyAPIKey("a", "imp_two00001.s").Allowed)
}

func TestVerifierHandler(t *testing.T) {
	t.Parallel()
	c := apiKeyCredential("c", 1, "imp_http0001", "s", Grant{PublishID: "pub-1", PlanID: "gold", Limits: PlanLimits{RequestsPerDay: 2}})
	oauth := Credential{ID: "o", Version: 1, Type: CredentialOAuthClient, KeyPrefix: "cid", SecretHash: sha("csecret"), Grants: []Grant{{PublishID: "pub-1"}}}
	v, _ := newTestVerifier(t, c, oauth)
	srv := httptest.NewServer(v.Handler("/verify"))
	defer srv.Close()

	do := func(path string, set func(*http.Request)) *http.Response {
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	resp := do("/verify/pub-1", func(r *http.Request) { r.Header.Set("X-API-Key", "imp_http0001.s") })
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "c", resp.Header.Get("X-Imprun-Credential-Id"))
	assert.Equal(t, "gold", resp.Header.Get("X-Imprun-Plan-Id"))

	resp = do("/verify/pub-1/some/original/path", func(r *http.Request) { r.Header.Set("Authorization", "Bearer imp_http0001.s") })
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	resp = do("/verify/pub-1", func(r *http.Request) { r.Header.Set("X-API-Key", "imp_http0001.s") })
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, string(DenyRateLimitedDay), resp.Header.Get("X-Imprun-Deny-Reason"))

	resp = do("/verify/pub-2", func(r *http.Request) { r.SetBasicAuth("cid", "csecret") })
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	resp = do("/verify/pub-1", func(r *http.Request) { r.SetBasicAuth("cid", "csecret") })
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	resp = do("/verify/pub-1", func(*http.Request) {})
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	resp = do("/verify/..%2fetc", func(*http.Request) {})
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}
