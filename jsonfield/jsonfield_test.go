package jsonfield

import (
	"encoding/json"
	"reflect"
	"testing"
)

type tls struct {
	Mode string `json:"mode"`
}

type listener struct {
	Name string `json:"name"`
	TLS  *tls   `json:"tls"`
}

type gateway struct {
	Listeners []listener        `json:"listeners"`
	Labels    map[string]string `json:"labels"`
	Spec      json.RawMessage   `json:"spec"`
}

func TestUnknownPath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		doc  string
		path string
		ok   bool
	}{
		{`{"listeners": [{"name": "a"}, {"name": "b", "tls": {"mod": "x"}}]}`, "listeners[1].tls.mod", true},
		{`{"LISTENERS": [], "color": "red"}`, "color", true},
		{`{"labels": {"any": "x"}, "spec": {"anything": 1}}`, "", false},
	}
	for _, tc := range cases {
		var doc any
		if err := json.Unmarshal([]byte(tc.doc), &doc); err != nil {
			t.Fatal(err)
		}
		path, ok := UnknownPath(doc, reflect.TypeOf(&gateway{}))
		if path != tc.path || ok != tc.ok {
			t.Errorf("%s: got %q %v, want %q %v", tc.doc, path, ok, tc.path, tc.ok)
		}
	}
}
