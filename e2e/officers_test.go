package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBreakGlassOfficers is the break-glass promise, end to end: a
// cluster whose config has a recovery block writes Secrets and ConfigMaps
// across a rotation; an etcd snapshot is taken; then every custodian's
// key is destroyed and the plugin's state deleted, and two of the three
// officers' age identities (one of them post-quantum) recover every
// object byte for byte, directly or through share transfers that keep
// each identity with its officer. One officer alone recovers nothing.
func TestBreakGlassOfficers(t *testing.T) {
	c := newCluster(t)
	c.startEtcd()
	c.writePluginConfig()
	officers := filepath.Join(c.dir, "officers")
	if err := os.MkdirAll(officers, 0o700); err != nil {
		t.Fatal(err)
	}
	names := []string{"ana", "bo", "cy"}
	ids := make([]string, len(names))
	var block strings.Builder
	sign := filepath.Join(c.dir, "signing-key.json")
	fmt.Fprintf(&block, "recovery:\n  threshold: 2\n  signingKeyFile: %s\n  officers:\n", sign)
	for i, name := range names {
		ids[i] = filepath.Join(officers, name+".age")
		args := []string{"officer", "keygen", "--out", ids[i]}
		if i == 2 {
			args = append(args, "--pq")
		}
		fmt.Fprintf(&block, "  - name: %s\n    recipient: %s\n", name, recipientOf(t, run(t, args...)))
	}
	run(t, "officer", "signing-key", "--config", c.config, "--out", sign)
	appendFile(t, c.config, block.String())
	packet := filepath.Join(officers, "packet.json")
	run(t, "officer", "packet", "--config", c.config, "--out", packet)

	c.startPlugin()
	c.startAPIServer(apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"})
	want := writeAcrossRotation(t, c, []string{"bg-a", "bg-b"}, 300, 50)

	snap := filepath.Join(c.dir, "etcd.snapshot")
	takeSnapshot(t, c, snap)
	c.apiserver.stop()
	c.plugin.stop()
	c.etcd.stop()
	// Every custodian is gone: key files, state, and the signing key file.
	for _, p := range append(c.keys, filepath.Join(c.dir, "state"), sign) {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}

	for _, pair := range [][2]int{{0, 1}, {0, 2}, {1, 2}} {
		t.Run(fmt.Sprintf("officers %s and %s", names[pair[0]], names[pair[1]]), func(t *testing.T) {
			out := filepath.Join(c.dir, fmt.Sprintf("recovered-%d%d", pair[0], pair[1]))
			run(t, "recover", "--officer-packet", packet, "--officer-identity", ids[pair[0]], "--officer-identity", ids[pair[1]],
				"--etcd-snapshot", snap, "--out-dir", out)
			want.check(t, out)
		})
	}
	t.Run("through share transfers", func(t *testing.T) {
		operator := filepath.Join(c.dir, "operator.age")
		recipient := recipientOf(t, run(t, "officer", "keygen", "--out", operator))
		args := []string{"recover", "--officer-packet", packet, "--officer-identity", operator, "--etcd-snapshot", snap}
		for _, i := range []int{0, 2} {
			transfer := filepath.Join(c.dir, names[i]+".transfer")
			run(t, "officer", "unwrap", "--identity", ids[i], "--officer-packet", packet, "--etcd-snapshot", snap, "--to", recipient, "--out", transfer)
			args = append(args, "--officer-shares", transfer)
		}
		out := filepath.Join(c.dir, "recovered-transfers")
		run(t, append(args, "--out-dir", out)...)
		want.check(t, out)
	})
	t.Run("drill without any identity", func(t *testing.T) {
		out := run(t, "drill", "--officer-packet", packet, "--etcd-snapshot", snap, "-o", "json")
		for _, want := range []string{`"signature": "valid"`, `"branch": true`} {
			if !strings.Contains(out, want) {
				t.Fatalf("drill report lacks %s:\n%s", want, lastLines(out, 40))
			}
		}
	})
	t.Run("one officer is not enough", func(t *testing.T) {
		_, stderr, err := runErr(t, "recover", "--officer-packet", packet, "--officer-identity", ids[1], "--etcd-snapshot", snap, "--dry-run", "-q")
		if err == nil {
			t.Fatal("recover with one officer succeeded")
		}
		if !strings.Contains(stderr, "officers' shares") {
			t.Fatalf("stderr does not say why:\n%s", stderr)
		}
	})
}

// recipientOf is the age recipient `officer keygen --out` printed.
func recipientOf(t *testing.T, stdout string) string {
	for _, f := range strings.Fields(stdout) {
		if strings.HasPrefix(f, "age1") {
			return f
		}
	}
	t.Fatalf("no recipient in %q", stdout)
	return ""
}

func appendFile(t *testing.T, path, text string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// run runs the trousseau binary and fails the test if it fails.
func run(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := runErr(t, args...)
	if err != nil {
		t.Fatalf("trousseau %s: %v\n%s%s", strings.Join(args[:2], " "), err, stdout, lastLines(stderr, 20))
	}
	return stdout
}

func runErr(t *testing.T, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, trousseauBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
