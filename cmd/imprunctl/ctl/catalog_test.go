package ctl

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSubset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		want, act any
		equal     bool
	}{
		{"same scalar", "a", "a", true},
		{"other scalar", "a", "b", false},
		{"number", 80.0, 80.0, true},
		{"defaults the file leaves out", map[string]any{"host": "x"}, map[string]any{"host": "x", "weight": 1.0}, true},
		{"a field the file sets differently", map[string]any{"host": "x"}, map[string]any{"host": "y"}, false},
		{"arrays element by element", []any{map[string]any{"host": "x"}}, []any{map[string]any{"host": "x", "port": 1.0}}, true},
		{"array longer in the API", []any{"a"}, []any{"a", "b"}, false},
		{"empty array and none", []any{}, nil, true},
		{"empty object and none", map[string]any{}, nil, true},
		{"null and something", nil, "x", false},
		{"order matters", []any{"a", "b"}, []any{"b", "a"}, false},
	} {
		require.Equal(t, tc.equal, subset(tc.want, tc.act), tc.name)
	}
}

func TestLoadCatalog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	c, err := loadCatalog(write("ok.yaml", `
services:
  - name: a
    version: 1.0.0
    routes: [{name: r, paths: [{type: prefix, value: /}], backend_refs: [{backend: b}]}]
    backends: [{name: b, endpoints: [{host: h, port: 80}]}]
products:
  - name: P
    version: "1"
    status: active
    plans: [{name: basic, rate_limit: {requests: 1, period: minute}}]
`))
	require.NoError(t, err)
	require.Equal(t, "a", c.Services[0].Fields["name"])
	require.NotContains(t, c.Services[0].Fields, "routes", "children are not fields of the service")
	require.Len(t, c.Services[0].Routes, 1)
	require.Equal(t, "active", c.Products[0].Status)
	require.NotContains(t, c.Products[0].Fields, "status")

	for name, body := range map[string]string{
		"unnamed":  "services: [{version: 1.0.0}]",
		"twice":    "gateways: [{name: g}, {name: g}]",
		"status":   "products: [{name: P, status: live}]",
		"unknown":  "service: []",
		"not yaml": "services: [",
	} {
		_, err := loadCatalog(write(name+".yaml", body))
		require.Error(t, err, name)
	}
}
