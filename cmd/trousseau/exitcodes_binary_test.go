package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExitCodesAndStderr: a handful of error messages as an
// operator meets them: the exit code and stderr of the command.
func TestExitCodesAndStderr(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setUp edits c and returns stdin and the arguments.
		setUp         func(t *testing.T, c *devCase) (string, []string)
		want, notWant string
	}{
		{"duration as a bare integer", func(t *testing.T, c *devCase) (string, []string) {
			c.edit(t, "probeInterval: 1s", "probeInterval: 30")
			return "", []string{"config", "check", "--config", c.config}
		}, `health.probeInterval: want a duration with its unit such as "30s", got the bare number 30`, ""},
		{"17 backends", func(t *testing.T, c *devCase) (string, []string) {
			var more strings.Builder
			for i := range 14 {
				fmt.Fprintf(&more, "- name: more-%d\n  local: {keyFile: %s}\n", i, keyPath(c.dir, fmt.Sprint(i)))
			}
			c.edit(t, "backends:\n", "backends:\n"+more.String())
			return "", []string{"serve", "--config", c.config}
		}, "backends: at most 16 backends, got 17", "threshold"},
		{"socket path over the unix limit", func(t *testing.T, c *devCase) (string, []string) {
			return "", []string{"serve", "--dev", "--socket", filepath.Join(c.dir, strings.Repeat("s", 120)+".sock"), "--state-dir", c.dir}
		}, "a unix socket path holds at most 107", "invalid argument"},
		{"{} as the state file", func(t *testing.T, c *devCase) (string, []string) {
			must(t, os.Mkdir(c.stateDir, 0o700))
			must(t, os.WriteFile(filepath.Join(c.stateDir, "state.json"), []byte("{}"), 0o600))
			return "", []string{"serve", "--config", c.config}
		}, "holds no Trousseau state (no version field): move it aside", "version 0"},
		{"decrypt-value -o", func(t *testing.T, c *devCase) (string, []string) {
			return "", []string{"decrypt-value", "--config", c.config, "--key", "/registry/secrets/a/b", "-o", "xml"}
		}, `-o "xml": want yaml, json or raw`, ""},
		{"1 MiB to encrypt", func(t *testing.T, c *devCase) (string, []string) {
			return strings.Repeat("x", 1<<20), []string{"encrypt", "--socket", c.socket}
		}, "input is larger than 512 bytes", "513"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDevCase(t)
			stdin, args := tc.setUp(t, c)
			_, stderr, code := runBin(t, stdin, args...)
			if code != 1 {
				t.Errorf("%v: exit %d, want 1", args, code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("%v says:\n%s\nwant %q", args, stderr, tc.want)
			}
			if tc.notWant != "" && strings.Contains(stderr, tc.notWant) {
				t.Errorf("%v says %q:\n%s", args, tc.notWant, stderr)
			}
		})
	}
}
