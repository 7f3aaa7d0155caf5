package store

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// pgxArgs turns uuids (alone, by pointer, in a slice) into bytes and leaves the rest, and the
// caller's slice, as they are.
func TestPgxArgsHandsUUIDsOverAsBytes(t *testing.T) {
	id, other := uuid.New(), uuid.New()
	var nilID *uuid.UUID
	now := time.Now()
	args := []any{"x", id, &other, nilID, []uuid.UUID{id, other}, []string{"a"}, &now}
	got := pgxArgs(args)
	if len(got) != len(args) {
		t.Fatalf("%d args became %d", len(args), len(got))
	}
	if got[0] != "x" || got[6] != &now {
		t.Fatalf("non-uuid arguments changed: %v", got)
	}
	if b, ok := got[1].([16]byte); !ok || uuid.UUID(b) != id {
		t.Fatalf("uuid became %T %v", got[1], got[1])
	}
	if b, ok := got[2].([16]byte); !ok || uuid.UUID(b) != other {
		t.Fatalf("*uuid became %T %v", got[2], got[2])
	}
	if got[3] != nil {
		t.Fatalf("a nil *uuid must be NULL, got %T %v", got[3], got[3])
	}
	if b, ok := got[4].([][16]byte); !ok || len(b) != 2 || uuid.UUID(b[0]) != id || uuid.UUID(b[1]) != other {
		t.Fatalf("[]uuid became %T %v", got[4], got[4])
	}
	if s, ok := got[5].([]string); !ok || len(s) != 1 {
		t.Fatalf("[]string changed: %T", got[5])
	}
	if _, ok := args[1].(uuid.UUID); !ok {
		t.Fatal("pgxArgs changed the caller's arguments")
	}
	plain := []any{1, "y"}
	if out := pgxArgs(plain); &out[0] != &plain[0] {
		t.Fatal("arguments without uuids should be passed through without a copy")
	}
}
