package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// recoverJSON is recover's -o json summary as docs/reference/cli.md
// documents it; unknown fields fail the decode.
type recoverJSON struct {
	Source        string   `json:"source"`
	Revision      int64    `json:"revision"`
	DryRun        bool     `json:"dryRun"`
	Damaged       bool     `json:"damaged"`
	Warnings      []string `json:"warnings"`
	Found         int      `json:"found"`
	Decrypted     int      `json:"decrypted"`
	Unencrypted   int      `json:"unencrypted"`
	NotEncrypted  int      `json:"notEncrypted"`
	OtherProvider int      `json:"otherProvider"`
	Failed        int      `json:"failed"`
	Reasons       []struct {
		Text     string   `json:"text"`
		Count    int      `json:"count"`
		Examples []string `json:"examples"`
	} `json:"reasons"`
	DEKs []struct {
		KeyID     string   `json:"keyID"`
		Threshold int      `json:"threshold"`
		Backends  []string `json:"backends"`
		Recovered bool     `json:"recovered"`
		Error     string   `json:"error"`
	} `json:"deks"`
	Backends []struct {
		Name             string `json:"name"`
		Skipped          string `json:"skipped"`
		ProbeError       string `json:"probeError"`
		KeyIdentity      string `json:"keyIdentity"`
		Unwraps          int64  `json:"unwraps"`
		UnwrapFailures   int64  `json:"unwrapFailures"`
		UnwrapsNotNeeded int64  `json:"unwrapsNotNeeded"`
	} `json:"backends"`
	TookSeconds      float64 `json:"tookSeconds"`
	ObjectsPerSecond float64 `json:"objectsPerSecond"`
	ExitCode         int     `json:"exitCode"`
	Error            string  `json:"error"`
}

// TestRecoverOutputGrammar runs the real binary: -o is the format of the
// objects and the summary, --out-dir the directory; --output DIR still
// works with a warning that names --out-dir, and never takes a format
// name for a directory.
func TestRecoverOutputGrammar(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	snap := f.Snapshot(t, t.TempDir())
	ab := f.Plugin.WriteConfig(t, "local-a", "local-b")
	c := f.Plugin.WriteConfig(t, "local-c")
	base := []string{"recover", "--config", ab, "--etcd-snapshot", snap, "-q"}

	t.Run("--out-dir with -o json: the summary on stdout", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "restore")
		out, stderr, code := runBin(t, "", append(base, "--out-dir", dir, "-o", "json")...)
		var s recoverJSON
		decodeStrict(t, out, &s)
		if code != 0 || s.ExitCode != 0 || s.Found != f.Found || s.Decrypted != f.Decrypted() || s.Failed != 0 || s.DryRun || len(s.DEKs) == 0 || len(s.Backends) != 2 {
			t.Fatalf("exit %d %+v\n%s", code, s, stderr)
		}
		for _, b := range s.Backends {
			if b.Unwraps == 0 || b.UnwrapFailures != 0 || b.Skipped != "" {
				t.Errorf("backend %+v", b)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "default", "secrets", "db-password.json")); err != nil {
			t.Errorf("objects not written as JSON: %v", err)
		}
	})
	t.Run("--dry-run -o json, quorum not reached: exit 1", func(t *testing.T) {
		out, _, code := runBin(t, "", "recover", "--config", c, "--etcd-snapshot", snap, "-q", "--dry-run", "-o", "json")
		var s recoverJSON
		decodeStrict(t, out, &s)
		if code != 1 || s.ExitCode != 1 || !s.DryRun || s.Failed == 0 || len(s.Reasons) == 0 || !strings.Contains(s.Error, "could not be recovered") {
			t.Fatalf("exit %d %+v", code, s)
		}
	})
	t.Run("--output DIR: deprecated, still written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "restore")
		out, stderr, code := runBin(t, "", append(base, "--output", dir)...)
		if code != 0 || out != "" || !strings.Contains(stderr, "--output DIR is deprecated") || !strings.Contains(stderr, "use --out-dir "+dir) {
			t.Fatalf("exit %d\n%s%s", code, out, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "default", "secrets", "db-password.yaml")); err != nil {
			t.Error(err)
		}
	})
	t.Run("--output json: a format, not a directory", func(t *testing.T) {
		cwd := t.TempDir()
		out, _, code := runBinIn(t, cwd, append(base, "--output", "json")...)
		var list struct{ Items []json.RawMessage }
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Items) == 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(cwd, "json")); err == nil {
			t.Error("a directory named json was made")
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--output text", []string{"--output", "text"}, "to write into a directory named text, say --out-dir text"},
		{"-o xml", []string{"-o", "xml"}, `output format "xml": want yaml or json`},
		{"--output and --out-dir", []string{"--output", "dir", "--out-dir", "other"}, "give the directory with --out-dir only"},
		{"no destination", nil, "say where the objects go: --out-dir DIR, -o yaml|json (stdout), or --dry-run"},
	} {
		t.Run(tc.name+": refused", func(t *testing.T) {
			cwd := t.TempDir()
			_, stderr, code := runBinIn(t, cwd, append(base, tc.args...)...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d\n%s\nwant %q", code, stderr, tc.want)
			}
			if entries, _ := os.ReadDir(cwd); len(entries) > 0 {
				t.Errorf("wrote %s", entries[0].Name())
			}
		})
	}
}
