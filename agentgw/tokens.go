// Package agentgw is the agent gateway inside the api process: the gRPC AgentService that agents
// connect out to, their authentication (registration tokens, agent JWTs, refresh secrets),
// presence (coalesced heartbeats, missed-heartbeat detection) and the delivery of the durable
// command outbox to whichever replica holds an agent's stream.
package agentgw

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
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

	macs sync.Pool // of *macScratch
}

// macScratch is an HMAC-SHA256 with the Signer's secret (reset before each use) and a buffer.
type macScratch struct {
	mac hash.Hash
	buf []byte
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
	key := []byte(secret)
	return &Signer{secret: key, ttl: ttl, verified: map[[32]byte]verifiedEntry{},
		macs: sync.Pool{New: func() any { return &macScratch{mac: hmac.New(sha256.New, key)} }}}, nil
}

// AgentClaims are the claims of an agent JWT.
type AgentClaims struct {
	ClusterID  string `json:"cid"`
	Generation int    `json:"gen"`
	jwt.RegisteredClaims
}

// Mint signs a JWT for an agent at a token generation.
func (s *Signer) Mint(agentID, clusterID uuid.UUID, generation int) (string, time.Time) {
	now := time.Now()
	exp := now.Add(s.ttl)
	return s.mint(agentID, clusterID, generation, now, exp, uuid.New()), exp
}

// mint writes the token that the jwt package would for AgentClaims{cid, gen, iss, sub, aud,
// exp, nbf (a minute before now), iat, jti}, in the same bytes (TestSignerMintMatchesJWT),
// without its reflection and maps: every agent connect mints one, and through the package
// that was some 3.7 KB of garbage and a fifth of the connect's authentication.
func (s *Signer) mint(agentID, clusterID uuid.UUID, generation int, now, exp time.Time, jti uuid.UUID) string {
	var idBuf [36]byte
	claims := make([]byte, 0, 256)
	uuidField := func(name string, id uuid.UUID) {
		encodeUUID(idBuf[:], id)
		claims = append(append(append(append(claims, '"'), name...), `":"`...), idBuf[:]...)
		claims = append(claims, '"', ',')
	}
	timeField := func(name string, t time.Time) {
		claims = append(append(append(claims, '"'), name...), `":`...)
		claims = strconv.AppendInt(claims, t.Truncate(jwt.TimePrecision).Unix(), 10)
		claims = append(claims, ',')
	}
	claims = append(claims, '{')
	uuidField("cid", clusterID)
	claims = strconv.AppendInt(append(claims, `"gen":`...), int64(generation), 10)
	claims = append(append(append(claims, `,"iss":"`...), jwtIssuer...), `",`...)
	uuidField("sub", agentID)
	claims = append(append(append(claims, `"aud":["`...), jwtAudience...), `"],`...)
	timeField("exp", exp)
	timeField("nbf", now.Add(-time.Minute))
	timeField("iat", now)
	uuidField("jti", jti)
	claims[len(claims)-1] = '}'

	enc := base64.RawURLEncoding
	tok := make([]byte, 0, len(jwtHeader)+1+enc.EncodedLen(len(claims))+1+enc.EncodedLen(sha256.Size))
	tok = append(append(tok, jwtHeader...), '.')
	tok = enc.AppendEncode(tok, claims)
	m := s.macs.Get().(*macScratch)
	m.mac.Reset()
	m.mac.Write(tok)
	var sum [sha256.Size]byte
	m.mac.Sum(sum[:0])
	s.macs.Put(m)
	tok = enc.AppendEncode(append(tok, '.'), sum[:])
	return string(tok)
}

// jwtHeader is the jwt package's encoded header of an HS256 token, {"alg":"HS256","typ":"JWT"}:
// the one header Mint writes and the one Verify's fast path reads.
const jwtHeader = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

// encodeUUID writes id's canonical text into dst (36 bytes) without allocating, as
// uuid.UUID.String would.
func encodeUUID(dst []byte, id uuid.UUID) {
	hex.Encode(dst[0:8], id[0:4])
	hex.Encode(dst[9:13], id[4:6])
	hex.Encode(dst[14:18], id[6:8])
	hex.Encode(dst[19:23], id[8:10])
	hex.Encode(dst[24:36], id[10:16])
	dst[8], dst[13], dst[18], dst[23] = '-', '-', '-', '-'
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
	if vt, e, ok := s.verifyOwn(raw, now); ok {
		s.remember(key, e, now)
		return vt, nil
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

// verifyOwn accepts raw when it is a token in the form Mint writes (its header, integer times,
// the audience as a list), correctly signed, and valid at now with the rules of the jwt
// package's check in Verify: issuer, audience, expiry required (now before exp), not before
// nbf when present. It reports false for anything else, good or bad, which Verify then
// leaves to the jwt package: it can only accept what the package accepts
// (TestSignerVerifyOwnAgreesWithJWT), and it saves that parse's 4.7 KB of garbage on every
// agent connect.
func (s *Signer) verifyOwn(raw string, now int64) (VerifiedToken, verifiedEntry, bool) {
	signed, sig, ok := strings.Cut(raw, ".")
	if !ok || signed != jwtHeader {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	payload, sig, ok := strings.Cut(sig, ".")
	enc := base64.RawURLEncoding
	if !ok || strings.IndexByte(sig, '.') >= 0 || enc.DecodedLen(len(sig)) != sha256.Size || len(payload) > 2048 {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	m := s.macs.Get().(*macScratch)
	defer s.macs.Put(m)
	var got, want [sha256.Size]byte
	m.buf = append(m.buf[:0], sig...)
	if n, err := enc.Decode(got[:], m.buf); err != nil || n != sha256.Size {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	m.mac.Reset()
	_, _ = io.WriteString(m.mac, raw[:len(jwtHeader)+1+len(payload)])
	m.mac.Sum(want[:0])
	if !hmac.Equal(got[:], want[:]) {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	m.buf = append(m.buf[:0], payload...)
	body, err := enc.AppendDecode(m.buf[len(m.buf):], m.buf)
	if err != nil {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	var c ownClaims
	if json.Unmarshal(body, &c) != nil || c.Issuer != jwtIssuer || !slices.Contains(c.Audience, jwtAudience) || c.ExpiresAt == nil {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	// Times beyond what nanoseconds hold, or before 1970, are the jwt package's to judge.
	const maxSeconds = math.MaxInt64 / int64(time.Second)
	inRange := func(t *int64) bool { return t == nil || *t >= 0 && *t <= maxSeconds }
	if !inRange(c.ExpiresAt) || !inRange(c.NotBefore) {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	e := verifiedEntry{expires: *c.ExpiresAt * int64(time.Second)}
	if c.NotBefore != nil {
		e.notBefore = *c.NotBefore * int64(time.Second)
	}
	aid, err1 := uuid.Parse(c.Subject)
	cid, err2 := uuid.Parse(c.ClusterID)
	if err1 != nil || err2 != nil || now < e.notBefore || now >= e.expires {
		return VerifiedToken{}, verifiedEntry{}, false
	}
	e.tok = VerifiedToken{AgentID: aid, ClusterID: cid, Generation: c.Generation}
	return e.tok, e, true
}

// ownClaims are AgentClaims as Mint writes them: the fields the jwt package decodes, with the
// types Mint uses (a float time or a single-string audience fails to decode here, and the jwt
// package judges it).
type ownClaims struct {
	ClusterID  string   `json:"cid"`
	Generation int      `json:"gen"`
	Issuer     string   `json:"iss"`
	Subject    string   `json:"sub"`
	Audience   []string `json:"aud"`
	ExpiresAt  *int64   `json:"exp"`
	NotBefore  *int64   `json:"nbf"`
	IssuedAt   *int64   `json:"iat"`
	ID         string   `json:"jti"`
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
