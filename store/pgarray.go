package store

import (
	"database/sql/driver"
	"strings"
	"time"
)

// pgArray renders a Postgres array literal of text values, so a batch travels as one parameter.
type pgArray []string

// Value implements driver.Valuer.
func (a pgArray) Value() (driver.Value, error) { return arrayLiteral([]string(a)), nil }

type pgTimeArray []time.Time

// Value implements driver.Valuer.
func (a pgTimeArray) Value() (driver.Value, error) {
	s := make([]string, len(a))
	for i, t := range a {
		s[i] = t.UTC().Format(time.RFC3339Nano)
	}
	return arrayLiteral(s), nil
}

func arrayLiteral(vals []string) string {
	var b strings.Builder
	b.WriteByte('{')
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(r.Replace(v))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
