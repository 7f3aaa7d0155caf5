package http

import (
	"strconv"

	"github.com/imprun/imprun-server/secrets"
)

// newRegistrationSecret returns a registration token; the agent gateway checks it by the same
// secrets.Hash that stores it here.
func newRegistrationSecret() string { return secrets.New("imprt_") }

// hashSecret is the stored form of a secret.
func hashSecret(s string) string { return secrets.Hash(s) }

func itoa(i int) string { return strconv.Itoa(i) }
