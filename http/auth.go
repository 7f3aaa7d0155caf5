package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Authentication errors: every one is a 401 with the same body except an unreachable issuer.
var (
	ErrInvalidToken      = errors.New("invalid token")
	ErrIssuerUnavailable = errors.New("identity provider unavailable")
)

// Identity is what a verified token says about its holder.
type Identity struct {
	Issuer  string
	Subject string
	Email   string
	Name    string
	Roles   []string
}

// AuthConfig configures the verification of people's tokens.
type AuthConfig struct {
	IssuerURL  string
	Audience   string
	RolesClaim string // dotted path, e.g. realm_access.roles
	EmailClaim string
}

// Authenticator verifies OIDC bearer tokens with go-oidc: issuer discovery, cached JWKS,
// signature, issuer, audience and expiry. There is one code path for every environment.
// Discovery happens lazily and is retried, so the API starts (and public routes work) while
// the issuer is down; authenticated routes answer 503 until it is back.
type Authenticator struct {
	cfg    AuthConfig
	client *http.Client

	mu        sync.Mutex
	verifier  *oidc.IDTokenVerifier
	lastTry   time.Time
	lastError error
}

// NewAuthenticator returns an Authenticator; nothing is fetched until the first token.
func NewAuthenticator(cfg AuthConfig) *Authenticator {
	return &Authenticator{cfg: cfg, client: &http.Client{Timeout: 5 * time.Second}}
}

// discoveryRetry is how often a failed discovery may be tried again: enough to notice the
// issuer coming back quickly, rare enough not to hammer it from every request.
const discoveryRetry = time.Second

func (a *Authenticator) getVerifier() (*oidc.IDTokenVerifier, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verifier != nil {
		return a.verifier, nil
	}
	if time.Since(a.lastTry) < discoveryRetry && a.lastError != nil {
		return nil, a.lastError
	}
	a.lastTry = time.Now()
	// The provider's key set outlives any request, so it gets a background context with our
	// HTTP client (timeouts) rather than the request's.
	ctx := oidc.ClientContext(context.Background(), a.client)
	p, err := oidc.NewProvider(ctx, a.cfg.IssuerURL)
	if err != nil {
		a.lastError = fmt.Errorf("%w: discovery of %s: %v", ErrIssuerUnavailable, a.cfg.IssuerURL, err)
		return nil, a.lastError
	}
	a.verifier = p.Verifier(&oidc.Config{ClientID: a.cfg.Audience})
	a.lastError = nil
	return a.verifier, nil
}

// Check is a readiness-style probe of the issuer (discovery done).
func (a *Authenticator) Check(context.Context) error {
	_, err := a.getVerifier()
	return err
}

// Verify checks raw and returns the identity it carries.
func (a *Authenticator) Verify(ctx context.Context, raw string) (*Identity, error) {
	v, err := a.getVerifier()
	if err != nil {
		return nil, err
	}
	tok, err := v.Verify(oidc.ClientContext(ctx, a.client), raw)
	if err != nil {
		// go-oidc reports a key set it could not fetch this way; that is the issuer being
		// down, not the caller's fault.
		if strings.Contains(err.Error(), "fetching keys") {
			return nil, fmt.Errorf("%w: %v", ErrIssuerUnavailable, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	id := &Identity{Issuer: tok.Issuer, Subject: tok.Subject}
	id.Email, _ = claims[a.cfg.EmailClaim].(string)
	id.Name, _ = claims["name"].(string)
	if id.Email == "" {
		return nil, fmt.Errorf("%w: no %s claim", ErrInvalidToken, a.cfg.EmailClaim)
	}
	if verified, ok := claims["email_verified"].(bool); ok && !verified {
		return nil, fmt.Errorf("%w: e-mail not verified", ErrInvalidToken)
	}
	if raw, ok := claimAt(claims, a.cfg.RolesClaim).([]any); ok {
		for _, r := range raw {
			if s, ok := r.(string); ok {
				id.Roles = append(id.Roles, s)
			}
		}
	}
	return id, nil
}

func claimAt(m map[string]any, path string) any {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}
