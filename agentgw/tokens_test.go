package agentgw

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A token verified once is answered from memory until it expires, with the same claims; a
// token altered by one character, signed with another secret, or expired is refused, cached or
// not.
func TestSignerVerifyRemembers(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(strings.Repeat("k", 32), time.Hour)
	require.NoError(t, err)
	aid, cid := uuid.New(), uuid.New()
	tok, _ := s.Mint(aid, cid, 3)

	for range 2 {
		vt, err := s.Verify(tok)
		require.NoError(t, err)
		assert.Equal(t, VerifiedToken{AgentID: aid, ClusterID: cid, Generation: 3}, vt)
	}
	s.mu.Lock()
	assert.Len(t, s.verified, 1)
	s.mu.Unlock()

	// The first character of the signature changed (the last one carries padding bits too,
	// which base64url decoding ignores).
	sig := strings.LastIndexByte(tok, '.') + 1
	alt := byte('A')
	if tok[sig] == 'A' {
		alt = 'B'
	}
	_, err = s.Verify(tok[:sig] + string(alt) + tok[sig+1:])
	require.Error(t, err)

	other, err := NewSigner(strings.Repeat("o", 32), time.Hour)
	require.NoError(t, err)
	_, err = other.Verify(tok)
	require.Error(t, err, "another secret")

	// A remembered token past its expiry is refused (and checked again, which refuses it).
	s.mu.Lock()
	key := sha256.Sum256([]byte(tok))
	e, ok := s.verified[key]
	require.True(t, ok)
	e.expires = time.Now().Add(-time.Second).UnixNano()
	s.verified[key] = e
	s.mu.Unlock()
	expired := jwt.NewWithClaims(jwt.SigningMethodHS256, AgentClaims{ClusterID: cid.String(), Generation: 3,
		RegisteredClaims: jwt.RegisteredClaims{Issuer: jwtIssuer, Subject: aid.String(), Audience: jwt.ClaimStrings{jwtAudience},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))}})
	raw, err := expired.SignedString(s.secret)
	require.NoError(t, err)
	_, err = s.Verify(raw)
	require.ErrorIs(t, err, jwt.ErrTokenExpired)
	vt, err := s.Verify(tok)
	require.NoError(t, err, "the real token has not expired: checked again, it passes")
	assert.Equal(t, aid, vt.AgentID)
}

// A full memory drops the expired entries first, and everything when none has expired.
func TestSignerRememberBounded(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(strings.Repeat("k", 32), time.Hour)
	require.NoError(t, err)
	now := time.Now()
	later, earlier := now.Add(time.Hour).UnixNano(), now.Add(-time.Second).UnixNano()
	key := func() [32]byte { return sha256.Sum256([]byte(uuid.NewString())) }
	for i := range maxVerified {
		exp := later
		if i%2 == 0 {
			exp = earlier
		}
		s.verified[key()] = verifiedEntry{expires: exp}
	}
	s.remember(key(), verifiedEntry{expires: later}, now.UnixNano())
	assert.Len(t, s.verified, maxVerified/2+1)
	for len(s.verified) < maxVerified {
		s.verified[key()] = verifiedEntry{expires: later}
	}
	newer := key()
	s.remember(newer, verifiedEntry{expires: later}, now.UnixNano())
	assert.Len(t, s.verified, 1)
	_, ok := s.verified[newer]
	assert.True(t, ok)
}

// libraryToken is what the jwt package signs for claims with secret.
func libraryToken(t *testing.T, secret []byte, claims jwt.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	require.NoError(t, err)
	return tok
}

// Mint writes the bytes the jwt package writes for the same claims, whatever the ids,
// generation and times.
func TestSignerMintMatchesJWT(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(strings.Repeat("m", 40), time.Hour)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 200 {
		aid, cid, jti := uuid.New(), uuid.New(), uuid.New()
		gen := rng.IntN(1 << 20)
		if i == 0 {
			gen = 0
		}
		now := time.Unix(1_700_000_000+rng.Int64N(1<<30), rng.Int64N(1e9))
		exp := now.Add(time.Duration(rng.Int64N(int64(48 * time.Hour))))
		want := libraryToken(t, s.secret, AgentClaims{ClusterID: cid.String(), Generation: gen, RegisteredClaims: jwt.RegisteredClaims{
			Issuer: jwtIssuer, Subject: aid.String(), Audience: jwt.ClaimStrings{jwtAudience}, IssuedAt: jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), ExpiresAt: jwt.NewNumericDate(exp), ID: jti.String()}})
		require.Equal(t, want, s.mint(aid, cid, gen, now, exp, jti), "claims %d", i)
	}
}

// verifyOwn accepts only what the jwt package accepts (with Verify's options), and accepts
// the tokens Mint writes; every other token goes to the package, which gives Verify's error.
func TestSignerVerifyOwnAgreesWithJWT(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(strings.Repeat("v", 32), time.Hour)
	require.NoError(t, err)
	other, err := NewSigner(strings.Repeat("o", 32), time.Hour)
	require.NoError(t, err)
	aid, cid := uuid.New(), uuid.New()
	now := time.Now()
	minted, _ := s.Mint(aid, cid, 4)
	byOther, _ := other.Mint(aid, cid, 4)
	claims := func(edit func(*AgentClaims)) AgentClaims {
		c := AgentClaims{ClusterID: cid.String(), Generation: 4, RegisteredClaims: jwt.RegisteredClaims{Issuer: jwtIssuer,
			Subject: aid.String(), Audience: jwt.ClaimStrings{jwtAudience}, ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute))}}
		edit(&c)
		return c
	}
	signed := func(header, payload string) string {
		mac := hmac.New(sha256.New, s.secret)
		enc := base64.RawURLEncoding
		in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
		mac.Write([]byte(in))
		return in + "." + enc.EncodeToString(mac.Sum(nil))
	}
	exp := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	body := func(extra string) string {
		return `{"cid":"` + cid.String() + `","gen":4,"iss":"imprun-server","sub":"` + aid.String() + `","aud":["imprun-agent"]` + extra + `}`
	}
	const header = `{"alg":"HS256","typ":"JWT"}`
	cases := map[string]struct {
		raw  string
		want bool // verifyOwn accepts it
	}{
		"minted":                 {minted, true},
		"the package's token":    {libraryToken(t, s.secret, claims(func(*AgentClaims) {})), true},
		"no nbf":                 {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.NotBefore = nil })), true},
		"another secret":         {byOther, false},
		"expired":                {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Second)) })), false},
		"not yet valid":          {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) })), false},
		"no expiry":              {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.ExpiresAt = nil })), false},
		"another issuer":         {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.Issuer = "someone" })), false},
		"another audience":       {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.Audience = jwt.ClaimStrings{"x"} })), false},
		"no audience":            {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.Audience = nil })), false},
		"bad subject":            {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.Subject = "agent" })), false},
		"bad cluster":            {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.ClusterID = "" })), false},
		"two audiences":          {libraryToken(t, s.secret, claims(func(c *AgentClaims) { c.Audience = jwt.ClaimStrings{"x", jwtAudience} })), true},
		"alg none":               {signed(`{"alg":"none","typ":"JWT"}`, body(`,"exp":`+exp)), false},
		"header with spaces":     {signed(`{"alg": "HS256", "typ": "JWT"}`, body(`,"exp":`+exp)), false},
		"audience as a string":   {signed(header, strings.Replace(body(`,"exp":`+exp), `["imprun-agent"]`, `"imprun-agent"`, 1)), false},
		"fractional expiry":      {signed(header, body(`,"exp":`+exp+`.5`)), false},
		"expiry as a string":     {signed(header, body(`,"exp":"`+exp+`"`)), false},
		"null expiry":            {signed(header, body(`,"exp":null`)), false},
		"issued-at as a string":  {signed(header, body(`,"exp":`+exp+`,"iat":"x"`)), false},
		"trailing data":          {signed(header, body(`,"exp":`+exp)+`{}`), false},
		"huge expiry":            {signed(header, body(`,"exp":99999999999999`)), false},
		"negative not-before":    {signed(header, body(`,"exp":`+exp+`,"nbf":-5`)), false},
		"upper-case keys":        {signed(header, strings.Replace(body(`,"exp":`+exp), `"iss"`, `"ISS"`, 1)), true},
		"a fourth segment":       {minted + ".x", false},
		"no signature":           {minted[:strings.LastIndexByte(minted, '.')], false},
		"payload altered":        {strings.Replace(minted, ".", ".e", 1), false},
		"signature with padding": {minted + "=", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, own := s.verifyOwn(c.raw, time.Now().UnixNano())
			assert.Equal(t, c.want, own)
			var lc AgentClaims
			_, libErr := jwt.ParseWithClaims(c.raw, &lc, func(*jwt.Token) (any, error) { return s.secret, nil },
				jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
				jwt.WithIssuer(jwtIssuer), jwt.WithAudience(jwtAudience), jwt.WithExpirationRequired())
			if own {
				require.NoError(t, libErr, "verifyOwn accepted what the jwt package refuses")
			}
			// Verify agrees with the package, whichever path judged.
			vt, err := s.Verify(c.raw)
			_, uerr1 := uuid.Parse(lc.Subject)
			_, uerr2 := uuid.Parse(lc.ClusterID)
			if libErr == nil && uerr1 == nil && uerr2 == nil {
				require.NoError(t, err)
				assert.Equal(t, VerifiedToken{AgentID: aid, ClusterID: cid, Generation: 4}, vt)
			} else {
				require.Error(t, err)
			}
		})
	}
}
