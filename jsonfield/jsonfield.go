// Package jsonfield names the JSON field a strict decode failed on, so a 400 or 422 can point
// at listeners[0].tls.mode rather than at mode. It knows nothing of HTTP; the REST layer and the
// catalog's policy specs share it.
package jsonfield

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// UnknownPath finds the first member of doc (a decoded JSON value; members in key order) that
// the Go type t does not know, matching names case-insensitively as encoding/json does, and
// returns its path.
func UnknownPath(doc any, t reflect.Type) (string, bool) { return unknownPath(doc, t, "") }

func unknownPath(doc any, t reflect.Type, path string) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		return "", false // decodes itself (uuids, raw specs)
	}
	switch v := doc.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			var ft reflect.Type
			switch t.Kind() {
			case reflect.Map:
				ft = t.Elem()
			case reflect.Struct:
				f, ok := field(t, k)
				if !ok {
					return sub, true
				}
				ft = f
			default:
				return "", false
			}
			if p, ok := unknownPath(v[k], ft, sub); ok {
				return p, true
			}
		}
	case []any:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
			return "", false
		}
		for i, e := range v {
			if p, ok := unknownPath(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
	}
	return "", false
}

// field returns the type of the struct field that JSON member name decodes into.
func field(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if sub, ok := field(ft, name); ok {
					return sub, true
				}
				continue
			}
		}
		if tag == "" {
			tag = f.Name
		}
		if strings.EqualFold(tag, name) {
			return f.Type, true
		}
	}
	return nil, false
}

// Kind says in words what JSON a Go kind (reflect.Kind.String()) expects: "a number".
func Kind(k string) string {
	switch k {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}
