package http

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
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
	client *nethttp.Client

	mu        sync.Mutex
	verifier  *oidc.IDTokenVerifier
	lastTry   time.Time
	lastError error
}

// NewAuthenticator returns an Authenticator; nothing is fetched until the first token.
func NewAuthenticator(cfg AuthConfig) *Authenticator {
	return &Authenticator{cfg: cfg, client: &nethttp.Client{Timeout: 5 * time.Second}}
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
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURL string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKSURL == "" {
		a.lastError = fmt.Errorf("%w: discovery of %s has no jwks_uri", ErrIssuerUnavailable, a.cfg.IssuerURL)
		return nil, a.lastError
	}
	keys := &throttledKeySet{next: oidc.NewRemoteKeySet(ctx, meta.JWKSURL), url: meta.JWKSURL, client: a.client, every: unknownKidRefetch}
	a.verifier = oidc.NewVerifier(meta.Issuer, keys, &oidc.Config{ClientID: a.cfg.Audience})
	a.lastError = nil
	return a.verifier, nil
}

// unknownKidRefetch is how often a token signed with a key id the API has not verified
// before may make it fetch the issuer's key set again: a rotated key is picked up, but a
// stream of tokens with made-up key ids cannot turn every request into a JWKS fetch.
const unknownKidRefetch = 30 * time.Second

// throttledKeySet wraps go-oidc's remote key set, which fetches the JWKS again for every
// token whose kid it does not hold. It keeps the list of key ids the issuer publishes and lets
// a token with any other kid through to the remote set (and a new fetch) at most once per
// every; in between such tokens are refused without a request to the issuer.
type throttledKeySet struct {
	next   oidc.KeySet
	url    string
	client *nethttp.Client
	every  time.Duration

	mu        sync.Mutex
	kids      map[string]bool // key ids the issuer published at the last fetch
	lastFetch time.Time
}

var errUnknownKid = errors.New("token signed with a key id the issuer does not publish")

func (k *throttledKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	kid := jwtKeyID(jwt)
	k.mu.Lock()
	if !k.kids[kid] && (k.kids == nil || time.Since(k.lastFetch) >= k.every) {
		k.lastFetch = time.Now()
		if kids, err := fetchKeyIDs(ctx, k.client, k.url); err == nil {
			k.kids = kids
		}
	}
	known := k.kids == nil || k.kids[kid] // a failed first fetch decides nothing
	k.mu.Unlock()
	if !known {
		return nil, errUnknownKid
	}
	return k.next.VerifySignature(ctx, jwt)
}

// fetchKeyIDs reads the key ids of a JWKS document.
func fetchKeyIDs(ctx context.Context, client *nethttp.Client, url string) (map[string]bool, error) {
	req, err := nethttp.NewRequestWithContext(ctx, nethttp.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != nethttp.StatusOK {
		return nil, fmt.Errorf("jwks: HTTP %d", resp.StatusCode)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, err
	}
	kids := map[string]bool{}
	for _, key := range set.Keys {
		kids[key.Kid] = true
	}
	return kids, nil
}

// jwtKeyID reads the kid of a compact JWS header ("" when there is none or it is unreadable).
func jwtKeyID(jwt string) string {
	head, _, ok := strings.Cut(jwt, ".")
	if !ok || len(head) > 4096 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(b, &h)
	return h.Kid
}

// Check is a readiness-style probe of the issuer (discovery done).
func (a *Authenticator) Check(context.Context) error {
	_, err := a.getVerifier()
	return err
}

// Verify checks raw and returns the identity it carries.
func (a *Authenticator) Verify(ctx context.Context, raw string) (*Identity, error) {
	id, _, err := a.verify(ctx, raw)
	return id, err
}

// verify is Verify that also returns the token's expiry.
func (a *Authenticator) verify(ctx context.Context, raw string) (*Identity, time.Time, error) {
	v, err := a.getVerifier()
	if err != nil {
		return nil, time.Time{}, err
	}
	tok, err := v.Verify(oidc.ClientContext(ctx, a.client), raw)
	if err != nil {
		// go-oidc reports a key set it could not fetch this way; that is the issuer being
		// down, not the caller's fault.
		if strings.Contains(err.Error(), "fetching keys") {
			return nil, time.Time{}, fmt.Errorf("%w: %v", ErrIssuerUnavailable, err)
		}
		return nil, time.Time{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	id := &Identity{Issuer: tok.Issuer, Subject: tok.Subject}
	id.Email, _ = claims[a.cfg.EmailClaim].(string)
	id.Name, _ = claims["name"].(string)
	if id.Email == "" {
		return nil, time.Time{}, fmt.Errorf("%w: no %s claim", ErrInvalidToken, a.cfg.EmailClaim)
	}
	if verified, ok := claims["email_verified"].(bool); ok && !verified {
		return nil, time.Time{}, fmt.Errorf("%w: e-mail not verified", ErrInvalidToken)
	}
	if raw, ok := claimAt(claims, a.cfg.RolesClaim).([]any); ok {
		for _, r := range raw {
			if s, ok := r.(string); ok {
				id.Roles = append(id.Roles, s)
			}
		}
	}
	return id, tok.Expiry, nil
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
