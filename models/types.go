package models

import (
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/google/uuid"
	"strings"
)

// JSONMap is a JSONB object column.
type JSONMap map[string]any

// Value implements driver.Valuer.
func (m JSONMap) Value() (driver.Value, error) {
	if m == nil {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// Scan implements sql.Scanner.
func (m *JSONMap) Scan(src any) error { return scanJSON(src, m) }

// JSON is any JSONB column holding a typed value (lists of listeners, route matches...).
type JSON[T any] struct{ V T }

// Value implements driver.Valuer.
func (j JSON[T]) Value() (driver.Value, error) {
	b, err := json.Marshal(j.V)
	return string(b), err
}

// Scan implements sql.Scanner.
func (j *JSON[T]) Scan(src any) error { return scanJSON(src, &j.V) }

// MarshalJSON encodes the value itself.
func (j JSON[T]) MarshalJSON() ([]byte, error) { return json.Marshal(j.V) }

// UnmarshalJSON decodes into the value.
func (j *JSON[T]) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &j.V) }

func scanJSON(src any, dst any) error {
	switch v := src.(type) {
	case nil:
		return nil
	case []byte:
		return json.Unmarshal(v, dst)
	case string:
		return json.Unmarshal([]byte(v), dst)
	}
	return fmt.Errorf("cannot scan %T into JSON", src)
}

// StringArray is a Postgres text[] column.
type StringArray []string

// Value implements driver.Valuer using the array literal syntax.
func (a StringArray) Value() (driver.Value, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String(), nil
}

// Scan implements sql.Scanner for the text form of a one-dimensional text[].
func (a *StringArray) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case nil:
		*a = nil
		return nil
	case []byte:
		s = string(v)
	case string:
		s = v
	default:
		return fmt.Errorf("cannot scan %T into StringArray", src)
	}
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return errors.New("not an array literal")
	}
	s = s[1 : len(s)-1]
	out := []string{}
	for i := 0; i < len(s); {
		if s[i] == ',' {
			i++
			continue
		}
		if s[i] == '"' {
			var b strings.Builder
			i++
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
			i++
			out = append(out, b.String())
			continue
		}
		j := strings.IndexByte(s[i:], ',')
		if j < 0 {
			j = len(s) - i
		}
		out = append(out, s[i:i+j])
		i += j
	}
	*a = out
	return nil
}

// UUIDArray is a Postgres uuid[] column.
type UUIDArray []uuid.UUID

// Value implements driver.Valuer.
func (a UUIDArray) Value() (driver.Value, error) {
	s := make(StringArray, len(a))
	for i, id := range a {
		s[i] = id.String()
	}
	return s.Value()
}

// Scan implements sql.Scanner.
func (a *UUIDArray) Scan(src any) error {
	var s StringArray
	if err := s.Scan(src); err != nil {
		return err
	}
	out := make(UUIDArray, 0, len(s))
	for _, v := range s {
		id, err := uuid.Parse(v)
		if err != nil {
			return err
		}
		out = append(out, id)
	}
	*a = out
	return nil
}
