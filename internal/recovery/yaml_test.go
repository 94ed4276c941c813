package recovery

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v2"
)

// yamlEdgeStrings are strings whose style yaml.v2 decides by rules
// appendYAML must follow.
var yamlEdgeStrings = []string{
	"", "a", "v1", "Secret", "yes", "No", "on", "OFF", "y", "n", "~", "null", "NULL", "true", "False",
	"0", "0123", "123", "-1", "+1", "1.5", ".5", "1e3", "1e+21", "0x1F", "0o17", "0b101", "-0b1", "1_000", "inf", "-.inf", ".nan", "NaN",
	"2001-12-14", "2001-12-14t21:59:43.10-05:00", "12:30", "190:20:30", "1:2", "-", "--", "---", "--x", "...", "..", ".x",
	"a: b", "a:b", "a:", ":a", ": a", "?", "? a", "?a", "-a", "- a", "#a", "a#b", "a #b", "*", "&a", "!a", "|", ">", "'q'", `"q"`, "%", "@a", "`",
	"a,b", "[a]", "{a}", "a b", " a", "a ", "it's", `back\slash`, `quo"te`, "<<", "dXNlcg==", "cGFzc3dvcmQtMDAwMDAwMDE=", "1abc", "3a5f", "9f86d081",
	"nginx:1.25", "https://example.com/x?y=z#f", "kubernetes.io/service-account-token", "app.kubernetes.io/name",
	"multi\nline", "trailing\n", "tab\there", "héllo", strings.Repeat("word ", 20), strings.Repeat("x", 150),
}

var yamlEdgeKeys = []string{
	"a", "b", "B", "_a", "a_", "a.b", "ab", "a1", "a01", "a10", "a2", "a001", "10", "9", "09", "1a", "A", "Z", "z",
	"apiVersion", "kind", "metadata", "data", "ca.crt", "tls.key", "x-y", "x.y", "x/y", "yes", "", "a b", "0",
}

// randomObject builds an object of JSON's types from the edge cases.
func randomObject(r *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for range 1 + r.IntN(5) {
		m[yamlEdgeKeys[r.IntN(len(yamlEdgeKeys))]] = randomValue(r, depth)
	}
	return m
}

func randomValue(r *rand.Rand, depth int) any {
	switch n := r.IntN(10); {
	case n < 2 && depth > 0:
		return randomObject(r, depth-1)
	case n < 3 && depth > 0:
		l := make([]any, r.IntN(4))
		for i := range l {
			l[i] = randomValue(r, depth-1)
		}
		return l
	case n < 4:
		return []any{int64(r.IntN(2000) - 1000), r.Float64() * 1e6, 2.5, 3.0, true, false, nil}[r.IntN(7)]
	case n < 5:
		return map[string]any{}
	case n < 7:
		return randomString(r)
	}
	return yamlEdgeStrings[r.IntN(len(yamlEdgeStrings))]
}

// randomString is a run of characters that change yaml.v2's choices.
func randomString(r *rand.Rand) string {
	const alphabet = "aeyYnxz019.-+:# '\"_/=*,?"
	b := make([]byte, 1+r.IntN(12))
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// TestAppendYAMLMatchesYAMLv2: where appendYAML writes an object, it
// writes exactly what yaml.v2 (what render used before) writes.
func TestAppendYAMLMatchesYAMLv2(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for i := range 20000 {
		o := randomObject(r, 3)
		got, ok := appendYAML(nil, o)
		if !ok || !yamlOrderDefined(o) {
			continue
		}
		fast++
		want, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("object %d:\nappendYAML:\n%s\nyaml.v2:\n%s", i, got, want)
		}
	}
	if fast < 2000 {
		t.Errorf("appendYAML wrote only %d of 20000 objects: the test compares too little", fast)
	}
}

// yamlOrderDefined reports whether yaml.v2's key order is one order for
// every map of v: with keys such as "09", "10" and "1a" its comparison
// goes round in a circle, and its output depends on the map's iteration.
func yamlOrderDefined(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		var keys []string
		for k, e := range v {
			if !yamlOrderDefined(e) {
				return false
			}
			keys = append(keys, k)
		}
		for _, a := range keys {
			for _, b := range keys {
				for _, c := range keys {
					if yamlKeyLess(a, b) && yamlKeyLess(b, c) && !yamlKeyLess(a, c) {
						return false
					}
				}
			}
		}
	case []any:
		for _, e := range v {
			if !yamlOrderDefined(e) {
				return false
			}
		}
	}
	return true
}

// TestAppendYAMLWritesSecrets: a Secret takes the fast path, whatever its
// base64 data starts with (the speed of recover -o yaml depends on it).
func TestAppendYAMLWritesSecrets(t *testing.T) {
	for _, v := range []string{"dXNlcg==", "MTIzNA==", "1234", "+/8=", "c2VjcmV0"} {
		o, err := decodeObject(secretBytes(t, "default", "db"))
		if err != nil {
			t.Fatal(err)
		}
		o["data"] = map[string]any{"k": v, "ca.crt": strings.Repeat("Y2Nj", 200)}
		if err := o.prepare(Key{Resource: "secrets", Namespace: "default", Name: "db"}, false); err != nil {
			t.Fatal(err)
		}
		got, ok := appendYAML(nil, o)
		want, _ := yaml.Marshal(map[string]any(o))
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("data %q: fast path %v\n%s\nyaml.v2:\n%s", v, ok, got, want)
		}
	}
}

// FuzzAppendYAML: any string, as a key and as values at several depths.
func FuzzAppendYAML(f *testing.F) {
	for _, s := range yamlEdgeStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o := map[string]any{"kind": s, s: []any{s, map[string]any{"k": s, "l": []any{s}}}, "z": map[string]any{s: s}}
		got, ok := appendYAML(nil, o)
		if !ok || !yamlOrderDefined(o) {
			return
		}
		want, err := yaml.Marshal(o)
		if err != nil {
			t.Skip()
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendYAML:\n%s\nyaml.v2:\n%s", got, want)
		}
	})
}
