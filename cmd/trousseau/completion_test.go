package main

import (
	"slices"
	"strings"
	"testing"
)

// TestShellCompletesFlagValues runs the real binary's completion entry
// point (what the bash, zsh and fish scripts of `trousseau completion`
// call): every -o completes its formats, and the other value flags their
// values, file extensions or directories.
func TestShellCompletesFlagValues(t *testing.T) {
	for _, tc := range []struct {
		args      string
		want      []string
		directive string
	}{
		{"status -o", []string{"text", "json"}, ":4"},
		{"config check -o", []string{"text", "json"}, ":4"},
		{"version -o", []string{"text", "json"}, ":4"},
		{"rotate -o", []string{"text", "json"}, ":4"},
		{"drill -o", []string{"text", "json"}, ":4"},
		{"recover -o", []string{"yaml", "json"}, ":4"},
		{"recover --output", []string{"yaml", "json"}, ":4"},
		{"decrypt-value -o", []string{"yaml", "json", "raw"}, ":4"},
		{"decrypt-value --input", []string{"raw", "base64", "json"}, ":4"},
		{"serve --log-level", []string{"debug", "info", "warn", "error"}, ":4"},
		{"serve --log-format", []string{"json", "text"}, ":4"},
		{"recover --resources", []string{"secrets", "configmaps"}, ":4"},
		{"config check --config", []string{"yaml", "yml"}, ":8"}, // file extensions
		{"serve --config", []string{"yaml", "yml"}, ":8"},
		{"drill --state-dir", nil, ":16"}, // directories
		{"recover --out-dir", nil, ":16"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			out, stderr, code := runBin(t, "", append(append([]string{"__complete"}, strings.Fields(tc.args)...), "")...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 0 || len(lines) == 0 || lines[len(lines)-1] != tc.directive || !slices.Equal(lines[:len(lines)-1], tc.want) && !(len(tc.want) == 0 && len(lines) == 1) {
				t.Errorf("exit %d: %q, want %q then %s\n%s", code, lines, tc.want, tc.directive, stderr)
			}
		})
	}
}
