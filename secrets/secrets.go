// Package secrets makes and hashes the high-entropy secrets of imprun-server: registration
// tokens, agent refresh secrets, API keys and OAuth client secrets. Every component that stores
// or checks one uses these functions, so the stored form can't drift between them.
package secrets

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
)

// Random returns n random bytes, URL-safe base64 without padding.
func Random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the OS random source failing is not something to continue from
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// New returns a secret: a readable prefix (e.g. "imprt_" for registration tokens) and 256
// random bits.
func New(prefix string) string { return prefix + Random(32) }

// Hash is how secrets are stored: hex SHA-256. The secrets are 256 random bits, so a fast hash
// is enough; there is nothing to guess.
func Hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Equal compares two hashes in constant time.
func Equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
