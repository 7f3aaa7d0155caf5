package agent

import (
	"math"
	"net/http"
	"strconv"
	"strings"
)

// Handler serves the Verifier over HTTP for a gateway's external authorization (Envoy Gateway
// ext-auth, nginx auth_request): GET or any method on <prefix>/<publish_id>, with the
// credential in X-API-Key, "Authorization: Bearer imp_...", or HTTP Basic (OAuth client id and
// secret). 200 allows; 401 (no or bad credential), 403 (no grant) and 429 (limits, with
// Retry-After) deny. The response carries X-Imprun-Credential-Id and X-Imprun-Plan-Id for the
// gateway to forward, X-Imprun-Deny-Reason on refusal and X-Imprun-Status (the status meant for
// the client); never the secret.
//
// A request with X-Imprun-Auth-Request (the nginx renderer's auth_request) gets 403 instead of
// 429, because nginx's auth_request turns any other refusal into a 500; the gateway reads
// X-Imprun-Status and answers 429 itself.
func (v *Verifier) Handler(prefix string) http.Handler {
	prefix = strings.TrimRight(prefix, "/") + "/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		publishID, _, _ := strings.Cut(rest, "/")
		if !ok || !safeID.MatchString(publishID) {
			http.NotFound(w, r)
			return
		}
		var d Decision
		switch key := presentedAPIKey(r); {
		case key != "":
			d = v.VerifyAPIKey(publishID, key)
		default:
			if id, secret, ok := r.BasicAuth(); ok {
				d = v.VerifyOAuthClient(publishID, id, secret)
			} else {
				d = Decision{Reason: DenyMalformed}
			}
		}
		if v.decided != nil {
			v.decided(d)
		}
		if d.CredentialID != "" {
			w.Header().Set("X-Imprun-Credential-Id", d.CredentialID)
		}
		if d.PlanID != "" {
			w.Header().Set("X-Imprun-Plan-Id", d.PlanID)
		}
		if d.Allowed {
			w.Header().Set("X-Imprun-Status", "200")
			w.WriteHeader(http.StatusOK)
			return
		}
		status := denyStatus(d.Reason)
		w.Header().Set("X-Imprun-Deny-Reason", string(d.Reason))
		w.Header().Set("X-Imprun-Status", strconv.Itoa(status))
		if d.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.RetryAfter.Seconds())), 10))
		}
		if status == http.StatusTooManyRequests && r.Header.Get("X-Imprun-Auth-Request") != "" {
			status = http.StatusForbidden
		}
		w.WriteHeader(status)
	})
}

// presentedAPIKey finds an API key in the request's headers.
func presentedAPIKey(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && strings.HasPrefix(tok, "imp_") {
		return tok
	}
	return ""
}

func denyStatus(reason DenyReason) int {
	switch reason {
	case DenyNoGrant:
		return http.StatusForbidden
	case DenyRateLimitedSecond, DenyRateLimitedMinute, DenyRateLimitedHour, DenyRateLimitedDay, DenyQuotaExceeded:
		return http.StatusTooManyRequests
	default:
		return http.StatusUnauthorized
	}
}
