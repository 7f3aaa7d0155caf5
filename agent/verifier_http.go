package agent

import (
	"net/http"
	"strings"
)

// Handler serves the Verifier over HTTP for a gateway's external authorization (Envoy Gateway
// ext-auth, nginx auth_request): GET or any method on <prefix>/<publish_id>, with the
// credential in X-API-Key, "Authorization: Bearer imp_...", or HTTP Basic (OAuth client id and
// secret). 200 allows; 401 (no or bad credential), 403 (no grant) and 429 (limits) deny. The
// response carries X-Imprun-Credential-Id and X-Imprun-Plan-Id for the gateway to forward, and
// X-Imprun-Deny-Reason on refusal; never the secret.
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
		if d.CredentialID != "" {
			w.Header().Set("X-Imprun-Credential-Id", d.CredentialID)
		}
		if d.PlanID != "" {
			w.Header().Set("X-Imprun-Plan-Id", d.PlanID)
		}
		if d.Allowed {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("X-Imprun-Deny-Reason", string(d.Reason))
		w.WriteHeader(denyStatus(d.Reason))
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
