package agentgw

import (
	"crypto/sha256"
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
	tok, _, err := s.Mint(aid, cid, 3)
	require.NoError(t, err)

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
