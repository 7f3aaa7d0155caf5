package http

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type countingKeySet struct{ calls atomic.Int32 }

func (c *countingKeySet) VerifySignature(context.Context, string) ([]byte, error) {
	c.calls.Add(1)
	return []byte("{}"), nil
}

func tokenWithKid(kid string) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"alg":"RS256","kid":%q}`, kid)))
	return h + ".e30.sig"
}

// TestUnknownKeyIDsDoNotFetchTheJWKS: tokens with made-up key ids cost at most one JWKS fetch
// per refetch interval, and never reach the remote key set; the published key id works.
func TestUnknownKeyIDsDoNotFetchTheJWKS(t *testing.T) {
	t.Parallel()
	var fetches atomic.Int32
	jwks := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		fetches.Add(1)
		_, _ = w.Write([]byte(`{"keys":[{"kid":"real","kty":"RSA"}]}`))
	}))
	defer jwks.Close()
	next := &countingKeySet{}
	k := &throttledKeySet{next: next, url: jwks.URL, client: jwks.Client(), every: time.Hour}
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if _, err := k.VerifySignature(ctx, tokenWithKid(fmt.Sprintf("bogus-%d", i))); err == nil {
			t.Fatal("a token with an unpublished key id is refused")
		}
	}
	if _, err := k.VerifySignature(ctx, tokenWithKid("real")); err != nil {
		t.Fatalf("the published key id is verified: %v", err)
	}
	if got := fetches.Load(); got != 1 {
		t.Fatalf("101 tokens cost %d JWKS fetches, want 1", got)
	}
	if got := next.calls.Load(); got != 1 {
		t.Fatalf("the remote key set saw %d tokens, want only the real one", got)
	}
}

// The principal cache's key is the token's SHA-256, whatever the pooled buffer held before.
func TestTokenKeyIsSHA256(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"a-long-token-" + strings.Repeat("x", 2000), "short", "", strings.Repeat("y", 20<<10), "short"} {
		require.Equal(t, sha256.Sum256([]byte(raw)), tokenKey(raw), "len %d", len(raw))
	}
}
