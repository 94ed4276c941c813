package config

import (
	"strings"
	"testing"
)

// TestErrorsAreWordedForTheFile: a value of the wrong type, and a YAML
// syntax error, are named by field or line in the file's words, with no
// Go type or decoder in the message.
func TestErrorsAreWordedForTheFile(t *testing.T) {
	const backends = "backends:\n  - {name: a, local: {keyFile: /a}}\n  - {name: b, local: {keyFile: /b}}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"a word for a number", "threshold: two\n" + backends, `threshold: want a whole number, got "two"`},
		{"a fraction for a number", "threshold: 1.5\n" + backends, "threshold: want a whole number, got 1.5"},
		{"a number for a string", "threshold: 2\nbackends:\n  - {name: a, local: {keyFile: 3}}\n", "backends[0].local.keyFile: want a string, got 3 (quote it)"},
		{"a scalar for a list", "threshold: 2\nbackends: 3\n", "backends: want a list, got 3"},
		{"a scalar for a mapping", "threshold: 2\nhealth: yes\n" + backends, "health: want a mapping of fields, got true"},
		{"a list for the file", "[1, 2]\n", "the file: want a mapping of fields, got a list"},
		{"a parser error, counted from 0", "threshold: 2\nbackends:\n  - name: a\n   local: {keyFile: /x}\n", "YAML syntax error at line 4: did not find expected '-' indicator:\n  4 |    local: {keyFile: /x}"},
		{"a scanner error, counted from 1", "threshold: 2\na: b: c\n", "YAML syntax error at line 2: mapping values are not allowed in this context:\n  2 | a: b: c"},
		{"an unclosed quote", "threshold: 2\nsocket: \"/x\n", "(the end of the file): found unexpected end of stream; look for an unclosed quote"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
			for _, goism := range []string{"Go struct", "json:", "unmarshal", "yaml: line"} {
				if strings.Contains(err.Error(), goism) {
					t.Errorf("%q in %v", goism, err)
				}
			}
		})
	}
}
