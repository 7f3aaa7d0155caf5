package agentgw

import (
	"testing"
	"time"
)

func TestAuthGuard(t *testing.T) {
	t.Parallel()
	g := newAuthGuard()
	g.every, g.burst, g.ttl = 50*time.Millisecond, 3, 100*time.Millisecond
	for i := 0; i < 3; i++ {
		if !g.allowed("10.0.0.1") {
			t.Fatalf("attempt %d refused before the burst was spent", i)
		}
		g.failed("10.0.0.1")
	}
	if g.allowed("10.0.0.1") {
		t.Fatal("a peer that spent its burst on failures is refused")
	}
	if !g.allowed("10.0.0.2") {
		t.Fatal("another peer is not affected")
	}
	time.Sleep(60 * time.Millisecond)
	if !g.allowed("10.0.0.1") {
		t.Fatal("the bucket refills")
	}

	g.rememberUnknown("h1")
	if !g.knownUnknown("h1") || g.knownUnknown("h2") {
		t.Fatal("an unknown token is remembered, and only that one")
	}
	time.Sleep(110 * time.Millisecond)
	if g.knownUnknown("h1") {
		t.Fatal("and forgotten after the ttl")
	}
}
