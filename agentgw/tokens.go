// Package agentgw is the agent gateway inside the api process: the gRPC AgentService that agents
// connect out to, their authentication (registration tokens, agent JWTs, refresh secrets),
// presence (coalesced heartbeats, missed-heartbeat detection) and the delivery of the durable
// command outbox to whichever replica holds an agent's stream.
package agentgw

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

const (
	jwtIssuer   = "imprun-server"
	jwtAudience = "imprun-agent"
)

// Signer mints and verifies agent JWTs (HS256 with the configured secret).
type Signer struct {
	secret []byte
	ttl    time.Duration

	// verified holds the tokens whose signature and claims checked out, by the SHA-256 of
	// their text (some 90 bytes an agent, where the text was 400), until they expire: an
	// agent presents the same JWT on every REST call (a snapshot fetch per publish) and on
	// every reconnect, and parsing and HMAC-checking it again each time was most of what such
	// a call cost the api. The signature of one text under one secret can't change, so only
	// the times are checked again. At most maxVerified entries.
	mu       sync.Mutex
	verified map[[32]byte]verifiedEntry
}

type verifiedEntry struct {
	tok                VerifiedToken
	notBefore, expires int64 // unix nanoseconds
}

// maxVerified bounds Signer's memory of verified tokens (an agent holds one at a time, two
// around a rotation): when full, the expired ones go, and all of them if none has expired.
const maxVerified = 1 << 17

// NewSigner returns a Signer; secret must be at least 32 bytes.
func NewSigner(secret string, ttl time.Duration) (*Signer, error) {
	if len(secret) < 32 {
		return nil, errors.New("agent JWT secret must be at least 32 characters (agent.jwt_secret)")
	}
	return &Signer{secret: []byte(secret), ttl: ttl, verified: map[[32]byte]verifiedEntry{}}, nil
}

// AgentClaims are the claims of an agent JWT.
type AgentClaims struct {
	ClusterID  string `json:"cid"`
	Generation int    `json:"gen"`
	jwt.RegisteredClaims
}

// Mint signs a JWT for an agent at a token generation.
func (s *Signer) Mint(agentID, clusterID uuid.UUID, generation int) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(s.ttl)
	claims := AgentClaims{
		ClusterID:  clusterID.String(),
		Generation: generation,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    jwtIssuer,
			Subject:   agentID.String(),
			Audience:  jwt.ClaimStrings{jwtAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        uuid.NewString(),
		},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
	return tok, exp, err
}

// VerifiedToken is what a valid agent JWT says.
type VerifiedToken struct {
	AgentID    uuid.UUID
	ClusterID  uuid.UUID
	Generation int
}

// Verify checks signature, algorithm, issuer, audience and expiry.
func (s *Signer) Verify(raw string) (VerifiedToken, error) {
	now := time.Now().UnixNano()
	key := sha256.Sum256([]byte(raw))
	s.mu.Lock()
	e, ok := s.verified[key]
	s.mu.Unlock()
	if ok && now >= e.notBefore && now < e.expires {
		return e.tok, nil
	}
	var claims AgentClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(jwtIssuer), jwt.WithAudience(jwtAudience), jwt.WithExpirationRequired())
	if err != nil {
		return VerifiedToken{}, fmt.Errorf("agent jwt: %w", err)
	}
	aid, err := uuid.Parse(claims.Subject)
	if err != nil {
		return VerifiedToken{}, errors.New("agent jwt: bad subject")
	}
	cid, err := uuid.Parse(claims.ClusterID)
	if err != nil {
		return VerifiedToken{}, errors.New("agent jwt: bad cluster")
	}
	vt := VerifiedToken{AgentID: aid, ClusterID: cid, Generation: claims.Generation}
	e = verifiedEntry{tok: vt, expires: claims.ExpiresAt.UnixNano()}
	if claims.NotBefore != nil {
		e.notBefore = claims.NotBefore.UnixNano()
	}
	s.remember(key, e, now)
	return vt, nil
}

// remember keeps a verified token, making room first when the map is full.
func (s *Signer) remember(key [32]byte, e verifiedEntry, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.verified) >= maxVerified {
		for k, v := range s.verified {
			if now >= v.expires {
				delete(s.verified, k)
			}
		}
		if len(s.verified) >= maxVerified {
			clear(s.verified)
		}
	}
	s.verified[key] = e
}
