package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	binErr    error
)

// buildBinary builds the trousseau binary once for the tests that must
// run the real process (signals, exit codes).
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "trs-bin"); binErr != nil {
			return
		}
		_, binErr = testutil.BuildTrousseau(binDir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "trousseau")
}

// run executes one trousseau command in-process.
func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := NewRootCmd(streams{In: strings.NewReader(stdin), Out: &out, Err: &errb})
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func shortTemp(t *testing.T) string {
	dir, err := os.MkdirTemp("", "trs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveDev runs `serve --dev` in-process until the test ends.
func serveDev(t *testing.T, dir string) (socket string, out *testutil.Buffer) {
	socket = filepath.Join(dir, "kms.sock")
	out, _ = serve(t, socket, "--dev", "--socket", socket, "--state-dir", dir, "--health-listen", "127.0.0.1:0")
	return socket, out
}

// serve runs `serve ARGS` in-process until it is healthy on socket, and
// returns its output and a stop function (also called when the test ends).
func serve(t *testing.T, socket string, args ...string) (out *testutil.Buffer, stop func()) {
	out = &testutil.Buffer{}
	cmd := NewRootCmd(streams{In: strings.NewReader(""), Out: out, Err: out})
	cmd.SetArgs(append([]string{"serve"}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitHealthy(t, socket, done)
	t.Logf("serve healthy %s after start", time.Since(start))
	return out, stop
}

func waitHealthy(t *testing.T, socket string, done chan error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _, err := run(t, "", "status", "--socket", socket)
		if err == nil && strings.Contains(out, "healthz: ok") {
			return
		}
		select {
		case err := <-done:
			done <- err // for stop, which waits on it
			t.Fatalf("serve exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not healthy: %s %v", out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDevModeAndOperatorCommands(t *testing.T) {
	dir := shortTemp(t)
	socket, out := serveDev(t, dir)
	for _, want := range []string{"Created key files", "config.yaml", "kind: EncryptionConfiguration", "endpoint: unix://" + socket} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dev mode output lacks %q:\n%s", want, out.String())
		}
	}
	for _, n := range devBackends {
		st, err := os.Stat(filepath.Join(dir, "keys", n+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v", n, err)
		}
	}
	sealed, _, err := run(t, "a dek seed of some bytes", "encrypt", "--socket", socket)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := run(t, sealed, "decrypt", "--socket", socket)
	if err != nil || plain != "a dek seed of some bytes" {
		t.Fatalf("decrypt: %q %v", plain, err)
	}
	if _, _, err := run(t, `{"keyID":"x","ciphertext":"AAAA","annotations":{}}`, "decrypt", "--socket", socket); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("decrypt of garbage: %v", err)
	}
	table, _, err := run(t, "", "config", "check", "--config", filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatalf("config check of the dev config: %v\n%s", err, table)
	}
	for _, want := range []string{"BACKEND", "local-a  yes", "local:", "threshold 2 of 3; 3 reachable"} {
		if !strings.Contains(table, want) {
			t.Errorf("config check output lacks %q:\n%s", want, table)
		}
	}
}

func TestDevModeReusesKeysAndKeyID(t *testing.T) {
	dir := shortTemp(t)
	var keyID string
	for i := range 2 {
		t.Run("start", func(t *testing.T) {
			s, out := serveDev(t, dir)
			st, _, err := run(t, "", "status", "--socket", s, "--health", "")
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				keyID = st
				return
			}
			if !strings.Contains(out.String(), "Reusing the key files") {
				t.Errorf("second start did not reuse keys:\n%s", out.String())
			}
			if st != keyID {
				t.Errorf("status after restart:\n%s\nbefore:\n%s", st, keyID)
			}
		})
	}
}

func TestServeRejectsBadInput(t *testing.T) {
	dir := shortTemp(t)
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("threshold: 2\nbackends:\n  - name: a\n    local: {keyFlie: /x}\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, "give --config FILE"},
		{[]string{"serve", "--dev"}, "--dev needs --socket and --state-dir"},
		{[]string{"serve", "--dev", "--config", cfg}, "exclusive"},
		{[]string{"serve", "--config", cfg}, `unknown field "backends[0].local.keyFlie"`},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, "read config"},
		{[]string{"config", "check", "--config", cfg}, "keyFlie"},
	} {
		_, _, err := run(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestConfigCheckQuorumUnreachable(t *testing.T) {
	dir := shortTemp(t)
	_, err := setUpDev(&bytes.Buffer{}, filepath.Join(dir, "kms.sock"), dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "keys", "local-a.key"))
	os.Remove(filepath.Join(dir, "keys", "local-b.key"))
	out, _, err := run(t, "", "config", "check", "--config", filepath.Join(dir, "config.yaml"))
	if err == nil || !strings.Contains(err.Error(), "quorum not reachable") {
		t.Fatalf("config check with 1 of 3: %v", err)
	}
	if !strings.Contains(out, "local-a  no") || !strings.Contains(out, "unavailable") {
		t.Fatalf("table does not show the missing backends:\n%s", out)
	}
}

func TestKeygenAndVersion(t *testing.T) {
	p := filepath.Join(shortTemp(t), "k.key")
	if _, _, err := run(t, "", "keygen", p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "", "keygen", p); err == nil {
		t.Fatal("keygen overwrote a key file")
	}
	if out, _, err := run(t, "", "version"); err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("version: %q %v", out, err)
	}
}

// TestSignals runs the real binary: SIGHUP rotates, SIGTERM stops it
// gracefully and removes the socket.
func TestSignals(t *testing.T) {
	dir := shortTemp(t)
	bin := buildBinary(t)
	socket := filepath.Join(dir, "kms.sock")
	var logs testutil.Buffer
	cmd := exec.Command(bin, "serve", "--dev", "--socket", socket, "--state-dir", filepath.Join(dir, "s"), "--health-listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitHealthy(t, socket, exited)
	before, _, _ := run(t, "", "status", "--socket", socket)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(15 * time.Second)
	for {
		after, _, err := run(t, "", "status", "--socket", socket)
		if err == nil && after != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not rotate the key id:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatal("socket left behind")
	}
	if !strings.Contains(logs.String(), "SIGHUP") || !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("logs do not show the signals:\n%s", logs.String())
	}
}
