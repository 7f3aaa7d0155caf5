package agent

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"gopkg.in/yaml.v3"
)

// marshalYAML encodes v with the two-space indent Kubernetes manifests use. Its bytes are
// yaml.v3's: the trees the renderers build (string-keyed maps, slices, strings, integers,
// floats, bools, nil) are written directly by yamlWriter, about 20 times faster than yaml.v3's
// reflection and emitter (the Envoy render of every deploy); a tree yamlWriter can't write
// exactly as yaml.v3 would (a multi-line string, a sequence in a sequence, a key that is not
// ASCII, another type) is encoded by yaml.v3.
func marshalYAML(v any) ([]byte, error) {
	return appendYAML(nil, v)
}

// appendYAML appends marshalYAML(v) to dst.
func appendYAML(dst []byte, v any) ([]byte, error) {
	if out, ok := writeYAML(dst, v); ok {
		return out, nil
	}
	data, err := marshalYAMLv3(v)
	if err != nil {
		return dst, err
	}
	return append(dst, data...), nil
}

// writeYAML appends v to dst by yamlWriter alone; false when it can't write v as yaml.v3
// does (dst's own bytes are unchanged then, and the returned slice is not to be used).
func writeYAML(dst []byte, v any) ([]byte, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return nil, false
	}
	w := yamlWriter{buf: dst}
	if !w.mapping(m, 0, false) {
		return nil, false
	}
	return w.buf, true
}

// marshalYAMLv3 is marshalYAML by yaml.v3 alone.
func marshalYAMLv3(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// yamlWriter writes block-style YAML as yaml.v3 does with an indent of 2: a mapping's keys in
// yaml.v3's order (yamlKeyLess), one per line; a sequence's items under their key two columns
// in, as "- "; a mapping in a sequence starting on the item's line; an empty mapping or
// sequence as {} or []. Each method reports false for what it can't write so (the caller then
// falls back to yaml.v3).
type yamlWriter struct {
	buf []byte
}

func (w *yamlWriter) indent(n int) {
	for ; n > 0; n-- {
		w.buf = append(w.buf, ' ')
	}
}

// mapping writes m's entries at column col; the first on the current line when inline (after
// a sequence's "- ").
func (w *yamlWriter) mapping(m map[string]any, col int, inline bool) bool {
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	// Insertion sort: the renderers' mappings are small.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && yamlKeyLess(keys[j], keys[j-1]); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	for i, k := range keys {
		// Two keys neither of which sorts first would come out in yaml.v3's sort's own order.
		if i > 0 && !yamlKeyLess(keys[i-1], k) {
			return false
		}
		if i > 0 || !inline {
			w.indent(col)
		}
		key, ok := yamlKey(k)
		if !ok {
			return false
		}
		w.buf = append(w.buf, key...)
		w.buf = append(w.buf, ':')
		if !w.value(m[k], col) {
			return false
		}
	}
	return true
}

// value writes v after a mapping key at column col: a scalar or an empty collection on the
// key's line, a mapping or a sequence on the lines below.
func (w *yamlWriter) value(v any, col int) bool {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			w.buf = append(w.buf, " {}\n"...)
			return true
		}
		w.buf = append(w.buf, '\n')
		return w.mapping(v, col+2, false)
	case []any:
		return w.sequence(len(v), func(i int) any { return v[i] }, col+2)
	case []string:
		return w.sequence(len(v), func(i int) any { return v[i] }, col+2)
	case []map[string]any:
		return w.sequence(len(v), func(i int) any { return v[i] }, col+2)
	}
	w.buf = append(w.buf, ' ')
	if !w.scalar(v) {
		return false
	}
	w.buf = append(w.buf, '\n')
	return true
}

// sequence writes the n items of a sequence at column col, item(i) being the i-th.
func (w *yamlWriter) sequence(n int, item func(int) any, col int) bool {
	if n == 0 {
		w.buf = append(w.buf, " []\n"...)
		return true
	}
	w.buf = append(w.buf, '\n')
	for i := 0; i < n; i++ {
		w.indent(col)
		w.buf = append(w.buf, "- "...)
		switch v := item(i).(type) {
		case map[string]any:
			if len(v) == 0 {
				w.buf = append(w.buf, "{}\n"...)
				continue
			}
			if !w.mapping(v, col+2, true) {
				return false
			}
		case []any, []string, []map[string]any:
			return false // yaml.v3 writes a sequence in a sequence on the item's line
		default:
			if !w.scalar(v) {
				return false
			}
			w.buf = append(w.buf, '\n')
		}
	}
	return true
}

// scalar writes v as yaml.v3 writes a scalar in block context.
func (w *yamlWriter) scalar(v any) bool {
	switch v := v.(type) {
	case nil:
		w.buf = append(w.buf, "null"...)
	case string:
		s, ok := yamlString(v)
		if !ok {
			return false
		}
		w.buf = append(w.buf, s...)
	case bool:
		w.buf = strconv.AppendBool(w.buf, v)
	case int:
		w.buf = strconv.AppendInt(w.buf, int64(v), 10)
	case int32:
		w.buf = strconv.AppendInt(w.buf, int64(v), 10)
	case int64:
		w.buf = strconv.AppendInt(w.buf, v, 10)
	case uint32:
		w.buf = strconv.AppendUint(w.buf, uint64(v), 10)
	case uint64:
		w.buf = strconv.AppendUint(w.buf, v, 10)
	case float64:
		w.float(v, 64)
	case float32:
		w.float(float64(v), 32)
	default:
		return false
	}
	return true
}

func (w *yamlWriter) float(f float64, bits int) {
	switch {
	case math.IsInf(f, 1):
		w.buf = append(w.buf, ".inf"...)
	case math.IsInf(f, -1):
		w.buf = append(w.buf, "-.inf"...)
	case math.IsNaN(f):
		w.buf = append(w.buf, ".nan"...)
	default:
		w.buf = strconv.AppendFloat(w.buf, f, 'g', -1, bits)
	}
}

// yamlString is s as yaml.v3 writes it in block context, when that is one line: a plain
// scalar when s can't be read back as anything but that string, quoted otherwise. Words,
// names and paths (an ASCII letter, then letters, digits and _ . / -) are plain unless they
// are one of YAML's words for true, false or null, and so are UUIDs; decimal digits are
// quoted; anything else is asked of yaml.v3 once and remembered. ok is false for a string
// yaml.v3 writes on several lines.
func yamlString(s string) (string, bool) {
	switch {
	case plainWord(s), len(s) == 36 && uuid.Validate(s) == nil:
		// A UUID in its canonical form (8-4-4-4-12 hex digits) is neither a number nor a date.
		return s, true
	case isDecimal(s):
		// Read back as an integer (or, with a leading zero and an 8 or 9, a float): quoted.
		return `"` + s + `"`, true
	}
	return yamlScalars.get(s)
}

// isDecimal reports whether s is 1 to 18 ASCII digits (a revision in a label).
func isDecimal(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isASCIIDigit(s[i]) {
			return false
		}
	}
	return true
}

// yamlKey is k as a key of a block mapping: as yamlString writes it, when that is an
// implicit key (yaml.v3 writes a key longer than 128 bytes as "? key") and k is ASCII
// (yamlKeyLess orders bytes, yaml.v3 orders runes).
func yamlKey(k string) (string, bool) {
	if len(k) > 128 {
		return "", false
	}
	for i := 0; i < len(k); i++ {
		if k[i] >= 0x80 {
			return "", false
		}
	}
	return yamlString(k)
}

// plainWord reports whether s is an ASCII letter followed by letters, digits and _ . / -,
// and not a word YAML reads as a bool or null (in any case, to stay on the safe side): the
// strings yaml.v3 writes plain without asking its resolver anything but its word table.
func plainWord(s string) bool {
	if s == "" || !isASCIILetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isASCIILetter(c) && !isASCIIDigit(c) && c != '_' && c != '.' && c != '/' && c != '-' {
			return false
		}
	}
	for _, w := range yamlWords {
		if strings.EqualFold(s, w) {
			return false
		}
	}
	return true
}

// yamlWords are the words YAML reads as a bool or null, in any case (plainWord).
var yamlWords = []string{"true", "false", "null", "y", "yes", "n", "no", "on", "off"}

func isASCIILetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isASCIIDigit(c byte) bool  { return c >= '0' && c <= '9' }

// yamlKeyLess is the order yaml.v3 sorts a mapping's string keys in, for ASCII keys: byte
// by byte, except that at the first difference two letters compare as bytes; a letter and
// another character put the other character first, or the letter first when the bytes before
// end in a digit; and two other characters compare the numbers that start there by value
// (a zero inside a number that has a nonzero digit before it counts as a digit of it), then
// by length, then as bytes. A key that is a prefix of another comes first.
func yamlKeyLess(a, b string) bool {
	afterDigit := false
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			afterDigit = isASCIIDigit(ca)
			continue
		}
		la, lb := isASCIILetter(ca), isASCIILetter(cb)
		if la && lb {
			return ca < cb
		}
		if la || lb {
			if afterDigit {
				return la
			}
			return lb
		}
		var na, nb int64
		if ca == '0' || cb == '0' {
			for j := i - 1; j >= 0 && isASCIIDigit(a[j]); j-- {
				if a[j] != '0' {
					na, nb = 1, 1
					break
				}
			}
		}
		ea, eb := i, i
		for ; ea < len(a) && isASCIIDigit(a[ea]); ea++ {
			na = na*10 + int64(a[ea]-'0')
		}
		for ; eb < len(b) && isASCIIDigit(b[eb]); eb++ {
			nb = nb*10 + int64(b[eb]-'0')
		}
		if na != nb {
			return na < nb
		}
		if ea != eb {
			return ea < eb
		}
		return ca < cb
	}
	return len(a) < len(b)
}

// yamlScalars remembers how yaml.v3 writes the strings plainWord does not decide: a
// publish's label values, regular expressions, durations, credential entries. It holds at
// most maxYAMLScalars strings and starts again empty when full.
var yamlScalars = scalarCache{m: map[string]scalarForm{}}

const maxYAMLScalars = 4096

type scalarForm struct {
	text string
	ok   bool
}

type scalarCache struct {
	mu sync.Mutex
	m  map[string]scalarForm
}

func (c *scalarCache) get(s string) (string, bool) {
	c.mu.Lock()
	f, hit := c.m[s]
	c.mu.Unlock()
	if hit {
		return f.text, f.ok
	}
	// A string is written the same alone as it is after a key or a "- " when it takes one
	// line: yaml.v3 chooses its style from the string alone, and the emitter's checks are the
	// same at the root and in a block.
	out, err := yaml.Marshal(s)
	f = scalarForm{}
	if err == nil && len(out) > 0 && bytes.IndexByte(out, '\n') == len(out)-1 && out[0] != '|' && out[0] != '>' {
		f = scalarForm{text: string(out[:len(out)-1]), ok: true}
	}
	c.mu.Lock()
	if len(c.m) >= maxYAMLScalars {
		c.m = map[string]scalarForm{}
	}
	c.m[s] = f
	c.mu.Unlock()
	return f.text, f.ok
}
