package secrets

import (
	"strings"
	"testing"
)

func TestNewHashEqual(t *testing.T) {
	a, b := New("imprt_"), New("imprt_")
	if !strings.HasPrefix(a, "imprt_") || len(a) != len("imprt_")+43 || a == b {
		t.Fatalf("New: %q %q", a, b)
	}
	// The stored form is hex SHA-256: agents and the api compare these strings.
	if got := Hash("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("Hash: %s", got)
	}
	if !Equal(Hash(a), Hash(a)) || Equal(Hash(a), Hash(b)) {
		t.Fatal("Equal")
	}
}
