package agent

import (
	"bytes"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestWriteYAMLGoldenDocs: every document of the Envoy golden renders is written by
// yamlWriter, not by the yaml.v3 fallback, and in the golden bytes. Each document is read back
// into the generic tree yaml.v3 decodes to and written again.
func TestWriteYAMLGoldenDocs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*", "envoy-gateway.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	docs := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, doc := range strings.Split(string(data), "---\n")[1:] {
			var tree map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(doc), &tree), f)
			out, ok := writeYAML(nil, tree)
			require.True(t, ok, "%s: a document fell back to yaml.v3:\n%s", f, doc)
			require.Equal(t, doc, string(out), f)
			docs++
		}
	}
	require.Greater(t, docs, 10)
}

// TestMarshalYAMLMatchesYAMLv3 compares marshalYAML with yaml.v3 on random trees of the shapes
// the renderers build, with keys that test yaml.v3's key order (digits, zeros, case, _ . / -)
// and strings that test its quoting. It also counts how many took yamlWriter's path, so that a
// writer that always fell back would not pass.
func TestMarshalYAMLMatchesYAMLv3(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	direct := 0
	const trees = 3000
	for i := 0; i < trees; i++ {
		tree := randomMapping(rng, 0)
		want, err := marshalYAMLv3(tree)
		require.NoError(t, err)
		got, err := marshalYAML(tree)
		require.NoError(t, err)
		if !bytes.Equal(want, got) {
			t.Fatalf("tree %d differs from yaml.v3\nyaml.v3:\n%s\nmarshalYAML:\n%s", i, want, got)
		}
		if _, ok := writeYAML(nil, tree); ok {
			direct++
		}
	}
	require.Greater(t, direct, trees/3, "most trees should be written directly")
}

// TestYAMLKeyLess holds yamlKeyLess to the order yaml.v3 gives every pair of a set of keys
// (a mapping of two keys is written in that order).
func TestYAMLKeyLess(t *testing.T) {
	keys := []string{"a", "b", "B", "Z", "_", "a_b", "aB", "a.b", "a-b", "a/b", "a0", "a00", "a01", "a1", "a10",
		"a2", "a9b", "a10b", "a1b", "a1_", "a1.", "10", "9", "09", "0", "00", "1a", "1A", "x1y0", "x1y00", "x10y0",
		"abc", "ab", "abd", "a1a", "a1A", "a0a", "a-1", "a-01", "a.1", "a_1", "1-2", "1.2", "12", "1_2"}
	for _, a := range keys {
		for _, b := range keys {
			if a == b {
				continue
			}
			out, err := yaml.Marshal(map[string]int{a: 1, b: 2})
			require.NoError(t, err)
			ka, _ := yamlString(a)
			aFirst := strings.HasPrefix(string(out), ka+":")
			require.Equal(t, aFirst, yamlKeyLess(a, b), "%q before %q in yaml.v3: %v", a, b, aFirst)
		}
	}
}

var yamlTestKeys = []string{"name", "kind", "apiVersion", "metadata", "spec", "port", "Port", "x-y", "x_y", "x.y",
	"x/y", "a1", "a10", "a2", "a01", "a0", "9", "10", "010", "1a", "app.kubernetes.io/managed-by",
	"imprun.dev/revision", "true", "yes", "null", "on", "", "a b", "key: x", "-dash", "ünï",
	"0a1b2c3d-0000-4000-8000-000000000001", "b", "B", "_", strings.Repeat("k", 129)}

var yamlTestStrings = []string{"plain", "imprun-agent", "4", "0", "-1", "1.5", "1e3", ".5", "0x1F", "0o17", "1_000",
	"true", "True", "TRUE", "yes", "No", "off", "ON", "y", "n", "null", "Null", "~", "", " ", " lead", "trail ",
	"a: b", "a:b", "a:", "- x", "-x", "? x", "#x", "x #y", "x#y", "[x]", "{x}", "x,y", "&a", "*a", "!t", "|x", ">x",
	"'q'", "\"dq\"", "%x", "@x", "`x", "a\tb", "a\rb", "a\nb", "line\n", "ünï", "日本", "\x00", "\xff",
	"^/v1/charges/[0-9a-f-]+$", "4000ms", "2001-12-14", "2001-12-14T21:59:43.10-05:00", "1:20", "12:30:45",
	"---", "...", "--- x", "... x", ".inf", "-.inf", ".nan", "<<", "=", "http://x.example.com/a?b=c",
	"ac6d8d5b-2e73-4422-863f-89457b16ee51", "0a1b2c3d-0000-4000-8000-000000000001", `{"id":"x","scopes":["a"]}`,
	strings.Repeat("long-", 40), "X-Env", "Bearer x", "a  b", "a\\b", "é", "00", "0999", "0777", "12345678901234567890",
	"123456789012345678", "2001-12-14-0000-4000-8000-000000000001", "12345678-1234-1234-1234-123456789012",
	"1E345678-1234-1234-1234-123456789012", "1e345678-1234-1234-1234-12345678901", "0x345678-1234-1234-1234-123456789012"}

func randomScalar(rng *rand.Rand) any {
	switch rng.Intn(12) {
	case 0:
		return rng.Intn(2) == 0
	case 1:
		return rng.Intn(100000) - 50
	case 2:
		return int32(rng.Intn(65536))
	case 3:
		return int64(rng.Int63())
	case 4:
		return []float64{0, 0.5, -2.25, 1e21, 1e-7, 100, math.Inf(1), math.Inf(-1), math.NaN(), math.Copysign(0, -1)}[rng.Intn(10)]
	case 5:
		return nil
	case 6:
		return uint32(rng.Uint32())
	default:
		return yamlTestStrings[rng.Intn(len(yamlTestStrings))]
	}
}

func randomKey(rng *rand.Rand) string {
	// Mostly the keys renderers use, so that many trees are written directly.
	if rng.Intn(40) == 0 {
		return yamlTestKeys[rng.Intn(len(yamlTestKeys))]
	}
	return yamlTestKeys[rng.Intn(22)]
}

func randomMapping(rng *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for n := 1 + rng.Intn(5); n > 0; n-- {
		m[randomKey(rng)] = randomValue(rng, depth+1)
	}
	return m
}

func randomValue(rng *rand.Rand, depth int) any {
	if depth > 4 {
		return randomScalar(rng)
	}
	switch rng.Intn(10) {
	case 0:
		return randomMapping(rng, depth)
	case 1:
		if rng.Intn(4) == 0 {
			return map[string]any{}
		}
		return randomMapping(rng, depth)
	case 2:
		var s []any
		for n := rng.Intn(4); n > 0; n-- {
			if rng.Intn(3) == 0 {
				s = append(s, randomMapping(rng, depth))
			} else if rng.Intn(30) == 0 {
				s = append(s, []any{"nested"})
			} else {
				s = append(s, randomScalar(rng))
			}
		}
		return s
	case 3:
		var s []string
		for n := rng.Intn(3); n > 0; n-- {
			s = append(s, yamlTestStrings[rng.Intn(len(yamlTestStrings))])
		}
		return s
	case 4:
		var s []map[string]any
		for n := rng.Intn(3); n > 0; n-- {
			s = append(s, randomMapping(rng, depth))
		}
		return s
	default:
		return randomScalar(rng)
	}
}

// BenchmarkMarshalYAML writes the documents of an Envoy golden render, with marshalYAML and,
// as the reference, with yaml.v3 alone.
func BenchmarkMarshalYAML(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "golden", "server-envoy-apikey", "envoy-gateway.yaml"))
	require.NoError(b, err)
	var trees []map[string]any
	for _, doc := range strings.Split(string(data), "---\n")[1:] {
		var tree map[string]any
		require.NoError(b, yaml.Unmarshal([]byte(doc), &tree))
		trees = append(trees, tree)
	}
	for _, c := range []struct {
		name string
		enc  func(any) ([]byte, error)
	}{{"marshalYAML", marshalYAML}, {"yaml.v3", marshalYAMLv3}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				for _, tree := range trees {
					if _, err := c.enc(tree); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
