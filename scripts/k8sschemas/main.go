// Command k8sschemas writes the standalone, strict JSON Schemas that kubeconform validates
// deploy/agent/ against, converted from the OpenAPI (Swagger 2.0) document a Kubernetes release
// ships (api/openapi-spec/swagger.json of the Go module k8s.io/kubernetes).
//
//	go run ./scripts/k8sschemas -swagger swagger.json -out DIR Kind:group/version ...
//
// scripts/k8s-schemas.sh runs it on a pinned release. The conversion follows openapi2jsonschema
// (--expanded --kubernetes --stand-alone --strict), which makes the schemas kubeconform
// downloads by default: every $ref is inlined, every object with properties refuses properties
// it does not name (additionalProperties: false), optional properties may be null, int-or-string
// is a string or an integer, and apiVersion and kind are pinned to the one kind the file is for.
// Descriptions are dropped: kubeconform never shows them, and they would triple the files.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

func main() {
	swagger := flag.String("swagger", "", "Kubernetes swagger.json")
	out := flag.String("out", "", "directory to write <kind>-<group>-<version>.json into")
	flag.Parse()
	if *swagger == "" || *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: k8sschemas -swagger swagger.json -out DIR Kind:group/version ...")
		os.Exit(2)
	}
	raw, err := os.ReadFile(*swagger)
	check(err)
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	check(json.Unmarshal(raw, &doc))
	check(os.MkdirAll(*out, 0o755))

	for _, want := range flag.Args() {
		kind, gv, ok := strings.Cut(want, ":")
		if !ok {
			check(fmt.Errorf("%q: want Kind:group/version (core group: Kind:v1)", want))
		}
		group, version, ok := strings.Cut(gv, "/")
		if !ok {
			group, version = "", gv
		}
		name, def := find(doc.Definitions, group, version, kind)
		if def == nil {
			check(fmt.Errorf("%s: no definition with x-kubernetes-group-version-kind %s", want, gv))
		}
		s := convert(doc.Definitions, def, map[string]bool{name: true}).(map[string]any)
		apiVersion := version
		if group != "" {
			apiVersion = group + "/" + version
		}
		props := s["properties"].(map[string]any)
		props["apiVersion"].(map[string]any)["enum"] = []any{apiVersion}
		props["kind"].(map[string]any)["enum"] = []any{kind}
		s["$schema"] = "http://json-schema.org/draft-07/schema#"
		s["x-kubernetes-group-version-kind"] = []any{map[string]any{"group": group, "version": version, "kind": kind}}
		file := strings.ToLower(kind)
		if group != "" {
			file += "-" + strings.ToLower(strings.Split(group, ".")[0])
		}
		file += "-" + strings.ToLower(version) + ".json"
		b, err := json.MarshalIndent(s, "", "  ")
		check(err)
		check(os.WriteFile(filepath.Join(*out, file), append(b, '\n'), 0o644))
		fmt.Printf("%s <- %s\n", file, name)
	}
}

// find returns the definition whose x-kubernetes-group-version-kind names exactly group/version/kind.
func find(defs map[string]map[string]any, group, version, kind string) (string, map[string]any) {
	names := make([]string, 0, len(defs))
	for n := range defs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, _ := json.Marshal(defs[n]["x-kubernetes-group-version-kind"])
		var gvks []gvk
		_ = json.Unmarshal(b, &gvks)
		if len(gvks) == 1 && gvks[0] == (gvk{group, version, kind}) {
			return n, defs[n]
		}
	}
	return "", nil
}

// convert returns a copy of schema v with references inlined and the strict rules applied.
// seen holds the definitions being inlined on the current path (Kubernetes' core kinds are not
// recursive; a cycle is an error rather than an endless file).
func convert(defs map[string]map[string]any, v any, seen map[string]bool) any {
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = convert(defs, e, seen)
		}
		return out
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			def, ok := defs[name]
			if !ok {
				check(fmt.Errorf("unresolved $ref %s", ref))
			}
			if seen[name] {
				check(fmt.Errorf("recursive definition %s", name))
			}
			seen[name] = true
			out := convert(defs, def, seen)
			delete(seen, name)
			return out
		}
		out := map[string]any{}
		for k, e := range v {
			switch {
			case k == "description" || k == "x-kubernetes-group-version-kind":
				continue
			case k == "properties":
				props := map[string]any{}
				for pn, ps := range e.(map[string]any) {
					props[pn] = convert(defs, ps, seen)
				}
				out[k] = props
			default:
				out[k] = convert(defs, e, seen)
			}
		}
		if out["format"] == "int-or-string" {
			delete(out, "type")
			delete(out, "format")
			out["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if props, ok := out["properties"].(map[string]any); ok {
			if _, set := out["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
			required := map[string]bool{}
			if r, ok := out["required"].([]any); ok {
				for _, n := range r {
					required[n.(string)] = true
				}
			}
			for pn, ps := range props {
				if !required[pn] {
					props[pn] = nullable(ps)
				}
			}
		}
		return out
	}
	return v
}

// nullable lets an optional property be null (YAML's empty value), as openapi2jsonschema does.
func nullable(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	switch t := m["type"].(type) {
	case string:
		m["type"] = []any{t, "null"}
	case nil:
		if oneOf, ok := m["oneOf"].([]any); ok {
			m["oneOf"] = append(oneOf, map[string]any{"type": "null"})
		}
	}
	return m
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8sschemas:", err)
		os.Exit(1)
	}
}
