package models

import (
	"strings"
	"unicode/utf8"
)

// Cut makes s fit a text column (or message) of n characters: valid UTF-8 without NUL, which
// Postgres refuses, and at most n characters, cut on a character boundary, never inside one.
// Korean text (3 bytes a character) is normal here. It is the one truncation the server uses.
func Cut(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if n < 0 || len(s) <= n {
		return s // n bytes hold at most n characters
	}
	i, count := 0, 0
	for i < len(s) && count < n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		count++
	}
	return s[:i]
}
