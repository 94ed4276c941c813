package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

func TestRecoverCommand(t *testing.T) {
	f := recoverytest.NewFixture(t, true)
	snap := f.Snapshot(t, t.TempDir())
	ab := f.Plugin.WriteConfig(t, "local-a", "local-b")
	c := f.Plugin.WriteConfig(t, "local-c")
	summary := fmt.Sprintf("found %d: %d decrypted", f.Found, f.Decrypted())

	t.Run("output directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "restore")
		out, errOut, err := run(t, "", "recover", "--config", ab, "--etcd-snapshot", snap, "--out-dir", dir)
		if err != nil || out != "" || !strings.Contains(errOut, summary) {
			t.Fatalf("%v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
		t.Logf("summary:\n%s", errOut)
		raw, err := os.ReadFile(filepath.Join(dir, "default", "secrets", "db-password.yaml"))
		if err != nil || !strings.Contains(string(raw), "kind: Secret") || strings.Contains(string(raw), "resourceVersion") {
			t.Fatalf("%v\n%s", err, raw)
		}
	})

	t.Run("json to stdout, filtered", func(t *testing.T) {
		out, errOut, err := run(t, "", "recover", "--config", ab, "--etcd-snapshot", snap, "-o", "json", "--resources", "secrets", "-n", "team-a", "-q")
		var list struct{ Items []map[string]any }
		if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Items) != 2 {
			t.Fatalf("%v\n%s\n%s", err, out, errOut)
		}
		if strings.Contains(errOut, "recover: ") {
			t.Errorf("progress printed with -q:\n%s", errOut)
		}
	})

	t.Run("live etcd over TLS", func(t *testing.T) {
		out, errOut, err := run(t, "", "recover", "--config", ab, "--etcd-endpoints", f.Etcd.Endpoint,
			"--cacert", f.Etcd.CACert, "--cert", f.Etcd.Cert, "--key", f.Etcd.Key, "-o", "yaml", "--resources", "configmaps")
		if err != nil || !strings.Contains(out, "kind: ConfigMap") || !strings.Contains(out, "color=blue") || !strings.Contains(errOut, "found 1: 1 decrypted") {
			t.Fatalf("%v\n%s\n%s", err, out, errOut)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		out, errOut, err := run(t, "", "recover", "--config", ab, "--etcd-snapshot", snap, "--dry-run")
		if err != nil || out != "" || !strings.Contains(errOut, "dry run") {
			t.Fatalf("%v\n%s\n%s", err, out, errOut)
		}
	})

	t.Run("quorum not reached", func(t *testing.T) {
		out, errOut, err := run(t, "", "recover", "--config", c, "--etcd-snapshot", snap, "-o", "yaml")
		if err == nil || !strings.Contains(err.Error(), "could not be recovered") || out != "" {
			t.Fatalf("with 1 of 3: %v\n%s", err, out)
		}
		t.Logf("summary:\n%s", errOut)
		if !strings.Contains(errOut, "quorum not reached for DEK") || !strings.Contains(errOut, fmt.Sprintf("%d failed", f.Decrypted())) {
			t.Errorf("summary:\n%s", errOut)
		}
	})

	t.Run("corrupt snapshot", func(t *testing.T) {
		raw, _ := os.ReadFile(snap)
		bad := filepath.Join(t.TempDir(), "bad.snapshot")
		os.WriteFile(bad, raw[:len(raw)/3], 0o600)
		_, _, err := run(t, "", "recover", "--config", ab, "--etcd-snapshot", bad, "--dry-run")
		if err == nil || !strings.Contains(err.Error(), "corrupt snapshot") {
			t.Fatalf("%v", err)
		}
	})

	t.Run("bad flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--config", ab, "--dry-run"}, "give --etcd-snapshot FILE or --etcd-endpoints"},
			{[]string{"--config", ab, "--etcd-snapshot", snap}, "say where the objects go"},
			{[]string{"--config", ab, "--etcd-snapshot", snap, "--etcd-endpoints", "http://x", "--dry-run"}, "exclusive"},
			{[]string{"--config", ab, "--etcd-snapshot", snap, "--dry-run", "--out-dir", "x"}, "--dry-run writes nothing"},
			{[]string{"--config", ab, "--etcd-snapshot", snap, "-o", "xml"}, `output format "xml"`},
			{[]string{"--config", ab, "--etcd-snapshot", snap, "--cacert", "x", "--dry-run"}, "are for --etcd-endpoints"},
			{[]string{"--etcd-snapshot", snap, "--dry-run"}, "give --config FILE (recover through the custodians) or --officer-identity FILE"},
		} {
			_, _, err := run(t, "", append([]string{"recover"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
			}
		}
	})

	t.Run("decrypt-value", func(t *testing.T) {
		key := "/registry/secrets/default/db-password"
		stored := f.Stored[key]
		etcdctlJSON := fmt.Sprintf(`{"header":{"revision":9},"kvs":[{"key":%q,"create_revision":5,"mod_revision":5,"version":1,"value":%q}],"count":1}`,
			base64.StdEncoding.EncodeToString([]byte(key)), base64.StdEncoding.EncodeToString(stored))
		for _, tc := range []struct {
			name  string
			stdin string
			args  []string
		}{
			{"raw, as etcdctl prints it", string(stored) + "\n", []string{"--key", key}},
			{"raw", string(stored), []string{"--key", key}},
			{"base64", base64.StdEncoding.EncodeToString(stored) + "\n", []string{"--key", key, "--input", "base64"}},
			{"etcdctl json", etcdctlJSON, []string{"--input", "json"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, _, err := run(t, tc.stdin, append([]string{"decrypt-value", "--config", ab}, tc.args...)...)
				if err != nil || !strings.Contains(out, "kind: Secret") || !strings.Contains(out, "name: db-password") || strings.Contains(out, "uid:") {
					t.Fatalf("%v\n%s", err, out)
				}
			})
		}
		out, _, err := run(t, string(stored), "decrypt-value", "--config", ab, "--key", key, "-o", "raw")
		if err != nil || !strings.HasPrefix(out, "k8s\x00") {
			t.Fatalf("-o raw: %v %q", err, out)
		}
		for _, tc := range []struct {
			stdin string
			args  []string
			want  string
		}{
			{string(stored), []string{"--key", "/registry/secrets/default/other"}, "message authentication failed"},
			{string(stored), nil, "--key ETCD_KEY is required"},
			{string(stored), []string{"--key", key, "--config", c}, "quorum not reached"},
			{etcdctlJSON, []string{"--input", "json", "--key", "/registry/x/y"}, "differs"},
			{"not json", []string{"--input", "json"}, "not the output of etcdctl"},
			{"plain", []string{"--key", key}, "unknown value format"},
		} {
			_, _, err := run(t, tc.stdin, append([]string{"decrypt-value", "--config", ab}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
			}
		}
	})
}
