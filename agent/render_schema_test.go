package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// The Envoy Gateway renderer's output is checked against the upstream CRD schemas, as
// kubeconform would in strict mode: every object's openAPIV3Schema of the served version,
// converted to JSON Schema (int-or-string, nullable, and no unknown fields where the CRD does not
// preserve them), vendored under testdata/crd-schemas at the versions below. CEL rules
// (x-kubernetes-validations) are not evaluated, as kubeconform does not either.
//
// To move to new versions, change them here and run (with the Go module proxy reachable):
//
//	go test ./agent -run TestEnvoyOutputMatchesCRDSchemas -update-crd-schemas
var updateCRDSchemas = flag.Bool("update-crd-schemas", false, "regenerate testdata/crd-schemas from the upstream CRDs at the pinned versions")

var crdSources = []struct {
	module, version, dir string
	files                []string
}{
	{"sigs.k8s.io/gateway-api", "v1.6.3", "config/crd/standard", []string{
		"gateway.networking.k8s.io_gateways.yaml", "gateway.networking.k8s.io_httproutes.yaml"}},
	{"github.com/envoyproxy/gateway", "v1.6.0", "charts/gateway-helm/crds/generated", []string{
		"gateway.envoyproxy.io_backends.yaml", "gateway.envoyproxy.io_backendtrafficpolicies.yaml", "gateway.envoyproxy.io_securitypolicies.yaml"}},
}

const crdSchemaDir = "testdata/crd-schemas"

func TestEnvoyOutputMatchesCRDSchemas(t *testing.T) {
	if *updateCRDSchemas {
		regenerateCRDSchemas(t)
	}
	schemas := loadCRDSchemas(t)

	var outputs []string
	for _, tc := range goldenCases {
		outputs = append(outputs, filepath.Join("testdata", "golden", tc.name, "envoy-gateway.yaml"))
	}
	validated := map[string]int{}
	for _, path := range outputs {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "%s document %d", path, i)
			if doc == nil {
				continue
			}
			apiVersion, _ := doc["apiVersion"].(string)
			kind, _ := doc["kind"].(string)
			sch, ok := schemas[apiVersion+"/"+kind]
			require.True(t, ok, "%s document %d: no vendored schema for %s %s (add its CRD to crdSources)", path, i, apiVersion, kind)
			raw, err := json.Marshal(doc)
			require.NoError(t, err)
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			require.NoError(t, err)
			if err := sch.Validate(inst); err != nil {
				meta, _ := doc["metadata"].(map[string]any)
				t.Errorf("%s document %d (%s %v) does not match the %s CRD schema:\n%v", path, i, kind, meta["name"], apiVersion, err)
			}
			validated[kind]++
		}
	}
	kinds := make([]string, 0, len(validated))
	for k, n := range validated {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("validated %s", strings.Join(kinds, " "))
	require.GreaterOrEqual(t, len(validated), 5, "every kind the renderer emits is checked")
}

// The schemas reject what the CRDs reject (so the check can fail).
func TestCRDSchemasRejectBadObjects(t *testing.T) {
	schemas := loadCRDSchemas(t)
	bad := []struct {
		name string
		doc  string
	}{
		{"unknown field", `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"r"},"spec":{"rulez":[]}}`},
		{"port out of range", `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"g"},"spec":{"gatewayClassName":"eg","listeners":[{"name":"http","port":70000,"protocol":"HTTP"}]}}`},
		{"wrong type", `{"apiVersion":"gateway.envoyproxy.io/v1alpha1","kind":"Backend","metadata":{"name":"b"},"spec":{"endpoints":"nope"}}`},
	}
	for _, tc := range bad {
		var doc map[string]any
		require.NoError(t, json.Unmarshal([]byte(tc.doc), &doc))
		sch := schemas[doc["apiVersion"].(string)+"/"+doc["kind"].(string)]
		require.NotNil(t, sch)
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.doc))
		require.NoError(t, err)
		require.Error(t, sch.Validate(inst), tc.name)
	}
}

func loadCRDSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	entries, err := os.ReadDir(crdSchemaDir)
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	out := map[string]*jsonschema.Schema{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		f, err := os.Open(filepath.Join(crdSchemaDir, e.Name()))
		require.NoError(t, err)
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		require.NoError(t, err)
		url := "file:///" + e.Name()
		require.NoError(t, c.AddResource(url, doc))
		sch, err := c.Compile(url)
		require.NoError(t, err, e.Name())
		m := doc.(map[string]any)["x-imprun-gvk"].(string)
		out[m] = sch
	}
	require.NotEmpty(t, out, "no schemas under %s", crdSchemaDir)
	return out
}

// regenerateCRDSchemas fetches the CRDs through the Go module proxy (go mod download) and writes
// one JSON Schema per served version and kind.
func regenerateCRDSchemas(t *testing.T) {
	require.NoError(t, os.MkdirAll(crdSchemaDir, 0o755))
	for _, src := range crdSources {
		out, err := exec.Command("go", "mod", "download", "-json", src.module+"@"+src.version).Output()
		require.NoError(t, err, "go mod download %s@%s", src.module, src.version)
		var mod struct{ Dir string }
		require.NoError(t, json.Unmarshal(out, &mod))
		for _, file := range src.files {
			data, err := os.ReadFile(filepath.Join(mod.Dir, src.dir, file))
			require.NoError(t, err)
			var crd struct {
				Spec struct {
					Group string `yaml:"group"`
					Names struct {
						Kind string `yaml:"kind"`
					} `yaml:"names"`
					Versions []struct {
						Name    string `yaml:"name"`
						Served  bool   `yaml:"served"`
						Storage bool   `yaml:"storage"`
						Schema  struct {
							OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
						} `yaml:"schema"`
					} `yaml:"versions"`
				} `yaml:"spec"`
			}
			require.NoError(t, yaml.Unmarshal(data, &crd))
			for _, v := range crd.Spec.Versions {
				if !v.Served || !v.Storage {
					continue
				}
				s := toJSONSchema(v.Schema.OpenAPIV3Schema).(map[string]any)
				s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
				s["x-imprun-gvk"] = crd.Spec.Group + "/" + v.Name + "/" + crd.Spec.Names.Kind
				s["x-imprun-source"] = fmt.Sprintf("%s@%s %s/%s", src.module, src.version, src.dir, file)
				b, err := json.MarshalIndent(s, "", " ")
				require.NoError(t, err)
				name := fmt.Sprintf("%s_%s_%s.json", crd.Spec.Group, v.Name, strings.ToLower(crd.Spec.Names.Kind))
				require.NoError(t, os.WriteFile(filepath.Join(crdSchemaDir, name), append(b, '\n'), 0o644))
			}
		}
	}
}

// toJSONSchema turns a CRD's structural OpenAPI v3 schema into a strict JSON Schema. Only schema
// positions are rewritten; values (enum, default, example) are copied as they are.
func toJSONSchema(node any) any {
	n, ok := node.(map[string]any)
	if !ok {
		return node
	}
	out := map[string]any{}
	for k, val := range n {
		switch k {
		case "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
			"x-kubernetes-embedded-resource", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "nullable":
			// CEL and list semantics are the API server's; the rest is rewritten below.
		case "properties", "patternProperties":
			props := map[string]any{}
			for name, sub := range val.(map[string]any) {
				props[name] = toJSONSchema(sub)
			}
			out[k] = props
		case "items", "not":
			out[k] = toJSONSchema(val)
		case "additionalProperties":
			if _, isBool := val.(bool); isBool {
				out[k] = val
			} else {
				out[k] = toJSONSchema(val)
			}
		case "allOf", "anyOf", "oneOf":
			list := val.([]any)
			subs := make([]any, len(list))
			for i, sub := range list {
				subs[i] = toJSONSchema(sub)
			}
			out[k] = subs
		default:
			out[k] = val
		}
	}
	if n["x-kubernetes-int-or-string"] == true {
		delete(out, "type")
		delete(out, "format")
		out["anyOf"] = []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
	}
	if n["nullable"] == true {
		if t, ok := out["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
	}
	_, hasProps := n["properties"]
	_, hasAdditional := n["additionalProperties"]
	if hasProps && !hasAdditional && n["x-kubernetes-preserve-unknown-fields"] != true {
		out["additionalProperties"] = false
	}
	return out
}
