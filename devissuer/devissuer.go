// Package devissuer is the real OIDC issuer that `make run` and the tests start on loopback
// (github.com/oauth2-proxy/mockoidc: discovery, JWKS, RS256), plus the signing of tokens for a
// chosen persona. The API verifies these tokens through exactly the same go-oidc code path as
// Keycloak's in production; nothing here bypasses verification.
package devissuer

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// Issuer is a running OIDC issuer.
type Issuer struct {
	m   *mockoidc.MockOIDC
	key *rsa.PrivateKey
}

// Start serves an issuer on addr (host:port; port 0 picks a free one) signing with key.
func Start(addr string, key *rsa.PrivateKey) (*Issuer, error) {
	m, err := mockoidc.NewServer(key)
	if err != nil {
		return nil, err
	}
	// mockoidc computes the key id lazily, unsynchronised, on the first JWKS request; two
	// concurrent first requests race. Compute it once before serving.
	if _, err := m.Keypair.KeyID(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev issuer listen %s: %w", addr, err)
	}
	if err := m.Start(ln, nil); err != nil {
		return nil, err
	}
	return &Issuer{m: m, key: key}, nil
}

// URL is the issuer URL (the `iss` of its tokens and the base of discovery).
func (i *Issuer) URL() string { return i.m.Issuer() }

// Key is the signing key.
func (i *Issuer) Key() *rsa.PrivateKey { return i.key }

// Close stops the issuer.
func (i *Issuer) Close() error { return i.m.Shutdown() }

// Persona describes the person a token is for.
type Persona struct {
	Email    string
	Subject  string   // default: derived from the email
	Name     string   // default: the email's local part
	Roles    []string // platform roles (operator, admin)
	Audience string
	TTL      time.Duration // default 1h; negative makes an already expired token
	// RolesClaim is the dotted claim path of the roles (default realm_access.roles, Keycloak's).
	RolesClaim string
	// EmailClaim is the claim of the e-mail (default email).
	EmailClaim string
}

// Token signs an access token for p as issuer with key.
func Token(key *rsa.PrivateKey, issuer string, p Persona) (string, error) {
	if p.Email == "" {
		return "", errors.New("persona needs an email")
	}
	if p.Audience == "" {
		return "", errors.New("persona needs an audience")
	}
	if p.Subject == "" {
		p.Subject = "dev|" + strings.ToLower(p.Email)
	}
	if p.Name == "" {
		p.Name, _, _ = strings.Cut(p.Email, "@")
	}
	if p.TTL == 0 {
		p.TTL = time.Hour
	}
	if p.RolesClaim == "" {
		p.RolesClaim = "realm_access.roles"
	}
	if p.EmailClaim == "" {
		p.EmailClaim = "email"
	}
	kp, err := mockoidc.NewKeypair(key)
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss":            issuer,
		"sub":            p.Subject,
		"aud":            []string{p.Audience},
		"iat":            now.Add(-time.Minute).Unix(),
		"exp":            now.Add(p.TTL).Unix(),
		"name":           p.Name,
		"email_verified": true,
		"typ":            "Bearer",
	}
	claims[p.EmailClaim] = p.Email
	roles := p.Roles
	if roles == nil {
		roles = []string{}
	}
	setPath(claims, p.RolesClaim, roles)
	return kp.SignJWT(claims)
}

// Token signs a token for p with this issuer's key and URL.
func (i *Issuer) Token(p Persona) (string, error) { return Token(i.key, i.URL(), p) }

func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// NewKey makes a fresh 2048-bit signing key.
func NewKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

// LoadOrCreateKey reads the PEM key at path, or makes one and writes it (0600), so that the
// issuer of `make run` and `api token` agree across restarts.
func LoadOrCreateKey(path string) (*rsa.PrivateKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		return parseKey(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pemBytes, 0o600); err != nil {
		return nil, err
	}
	return key, os.Rename(tmp, path)
}

// LoadKey reads the PEM key at path.
func LoadKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dev issuer key %s: %w (is `make run` or `api dev-issuer` running?)", path, err)
	}
	return parseKey(b)
}

func parseKey(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("dev issuer key: not PEM")
	}
	return x509.ParsePKCS1PrivateKey(blk.Bytes)
}
