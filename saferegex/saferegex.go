// Package saferegex decides whether a regular expression from a tenant may run on a shared data
// plane: it accepts only a conservative subset whose meaning is the same in Go's RE2 (the API and
// Envoy) and PCRE2 (nginx), and that cannot backtrack catastrophically in PCRE.
//
// The API checks route and match regexes with it, and the reference agent checks them again
// before rendering (defence in depth), so it depends on nothing but the standard library, like
// the protocol both share.
package saferegex

import (
	"fmt"
	"regexp/syntax"
	"strings"
)

// Limits of the subset.
const (
	// MaxLength bounds an expression's text.
	MaxLength = 256
	// MaxRepeat bounds a counted repetition ({n,m}): RE2 refuses more than 1000, and large
	// counts are costly in PCRE.
	MaxRepeat = 100
)

// Check returns nil when expr is in the subset, or an error that names the construct that is
// not, in words fit for a 422.
func Check(expr string) error {
	if expr == "" {
		return fmt.Errorf("is empty")
	}
	if len(expr) > MaxLength {
		return fmt.Errorf("is longer than %d characters", MaxLength)
	}
	for i := 0; i < len(expr); i++ {
		if c := expr[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("may contain printable ASCII only (byte %d is 0x%02x)", i, c)
		}
	}
	// Escapes that the two engines read differently, or that only one of them knows.
	for _, esc := range []struct{ text, why string }{
		{`\x{`, `\x{...} escapes (PCRE without UTF mode refuses code points above 255)`},
		{`\p`, `Unicode classes \p{...}`},
		{`\P`, `Unicode classes \P{...}`},
		{`\Q`, `\Q...\E quoting`},
		{`\C`, `\C (any byte)`},
	} {
		if idx := escapeIndex(expr, esc.text); idx >= 0 {
			return fmt.Errorf("uses %s at offset %d, which RE2 and PCRE do not read the same way", esc.why, idx)
		}
	}
	if strings.Contains(expr, "(?") && !onlyNonCapturing(expr) {
		return fmt.Errorf("uses a (?...) group other than (?:...): flags, named groups and lookaround are not allowed")
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return fmt.Errorf("is not a valid regular expression: %s", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	return walk(re, false)
}

// escapeIndex finds an escape sequence (a backslash not itself escaped) in expr.
func escapeIndex(expr, esc string) int {
	for i := 0; i+len(esc) <= len(expr); i++ {
		if expr[i] == '\\' {
			if strings.HasPrefix(expr[i:], esc) {
				return i
			}
			i++ // skip the escaped character
		}
	}
	return -1
}

// onlyNonCapturing reports whether every "(?" in expr opens a (?:...) group.
func onlyNonCapturing(expr string) bool {
	for i := 0; i+1 < len(expr); i++ {
		switch {
		case expr[i] == '\\':
			i++
		case expr[i] == '(' && expr[i+1] == '?':
			if i+2 >= len(expr) || expr[i+2] != ':' {
				return false
			}
		}
	}
	return true
}

// walk refuses nested quantifiers and repeated alternations (the shapes of catastrophic
// backtracking in PCRE) and large counted repetitions.
func walk(re *syntax.Regexp, inRepeat bool) error {
	switch re.Op {
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		if inRepeat {
			return fmt.Errorf("nests a quantifier inside another (%s), which can backtrack catastrophically", re.String())
		}
		if re.Op == syntax.OpRepeat && (re.Max > MaxRepeat || (re.Max == -1 && re.Min > MaxRepeat)) {
			return fmt.Errorf("repeats more than %d times (%s)", MaxRepeat, re.String())
		}
		// x? inside a repetition is as dangerous as x*; a quest alone is not a repetition.
		nested := re.Op != syntax.OpQuest
		for _, sub := range re.Sub {
			if err := walk(sub, nested || inRepeat); err != nil {
				return err
			}
		}
		return nil
	case syntax.OpAlternate:
		if inRepeat {
			// (a|aa)* backtracks exponentially in PCRE although no quantifier nests.
			return fmt.Errorf("repeats an alternation (%s), which can backtrack catastrophically; use a character class", re.String())
		}
		for _, sub := range re.Sub {
			if err := walk(sub, inRepeat); err != nil {
				return err
			}
		}
		return nil
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL, syntax.OpLiteral, syntax.OpCharClass, syntax.OpEmptyMatch,
		syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary, syntax.OpCapture, syntax.OpConcat:
		for _, sub := range re.Sub {
			if err := walk(sub, inRepeat); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("uses a construct outside the shared subset (%s)", re.String())
}
