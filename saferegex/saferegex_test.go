package saferegex

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	ok := []string{
		`^/v1/charges/[0-9a-f-]+$`, `^/users/\d+/orders$`, `^/(a|b|c)/x`, `(a|b)+`, `^/(v1|v2)/`, `^/files/[^/]{1,64}\.json$`,
		`^/v[12]/`, `(?:ab)+`, `^Bearer [A-Za-z0-9._-]+$`, `\bword\b`, `^/\\x$`,
	}
	for _, e := range ok {
		if err := Check(e); err != nil {
			t.Errorf("Check(%q) = %v, want nil", e, err)
		}
	}
	bad := map[string]string{
		`^/\x{263a}`:                     `\x{...}`,
		`^/\p{Greek}`:                    `Unicode classes`,
		`\Qa.b\E`:                        `\Q...\E`,
		`(a+)+$`:                         `nests a quantifier`,
		`(a*)*b`:                         `nests a quantifier`,
		`^(a|aa)*$`:                      `repeats an alternation`,
		`(foo|bar)+`:                     `repeats an alternation`,
		`(a?){5}`:                        `nests a quantifier`,
		`a{1,1000}`:                      `repeats more than 100`,
		`(?i)abc`:                        `(?...) group`,
		`(?P<n>a)`:                       `(?...) group`,
		`(?=a)`:                          `(?...) group`,
		`^/caf` + "\u00e9":               `printable ASCII`,
		"a\nb":                           `printable ASCII`,
		`(a`:                             `not a valid regular expression`,
		``:                               `is empty`,
		strings.Repeat("a", MaxLength+1): `longer than`,
	}
	for e, want := range bad {
		err := Check(e)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want an error containing %q", e, err, want)
		}
	}
}
