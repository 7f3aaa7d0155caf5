package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
)

// newRegistrationSecret returns a registration token: a recognisable prefix and 256 random
// bits. Only its hash is stored.
func newRegistrationSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "imprt_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// hashSecret is the stored form of a high-entropy secret: hex SHA-256 (the agent gateway
// hashes presented tokens the same way).
func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func itoa(i int) string { return strconv.Itoa(i) }
