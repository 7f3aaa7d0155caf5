package models

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	t.Parallel()
	korean := strings.Repeat("배포실패", 250) // 1,000 characters, 3,000 bytes
	got := Cut(korean, 999)
	if utf8.RuneCountInString(got) != 999 || !utf8.ValidString(got) || !strings.HasPrefix(korean, got) {
		t.Fatalf("Cut of Korean text: %d characters, valid %t", utf8.RuneCountInString(got), utf8.ValidString(got))
	}
	if Cut("abc", 10) != "abc" || Cut("abcdef", 3) != "abc" {
		t.Fatal("ASCII")
	}
	if got := Cut("a\xffb\x00c", 10); got != "a\uFFFDbc" {
		t.Fatalf("invalid UTF-8 and NUL: %q", got)
	}
}
