//go:build cgo

package pkcs11

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// The tests run against a real SoftHSM2 (hack/softhsm.sh); each makes
// its own tokens and keys in a directory named by SOFTHSM2_CONF.

// softhsmModules are where distributions put SoftHSM2's module, after
// TROUSSEAU_SOFTHSM_MODULE; hack/softhsm.sh looks in the same places.
var softhsmModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
}

// softhsmModule finds SoftHSM2 and its tools. Missing, they fail the
// test; only `go test -short` skips it.
func softhsmModule(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs SoftHSM2 and OpenSC: run hack/softhsm.sh (./hack/test.sh does), then test without -short")
	}
	module := os.Getenv("TROUSSEAU_SOFTHSM_MODULE")
	if module == "" {
		for _, m := range softhsmModules {
			if _, err := os.Stat(m); err == nil {
				module = m
				break
			}
		}
	}
	if module == "" {
		t.Fatal("SoftHSM2 is not installed: run hack/softhsm.sh (./hack/test.sh does), or set TROUSSEAU_SOFTHSM_MODULE to libsofthsm2.so")
	}
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("TROUSSEAU_SOFTHSM_MODULE: %v: run hack/softhsm.sh, which prints the module's path", err)
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run hack/softhsm.sh (./hack/test.sh does)", tool)
		}
	}
	return module
}

// The PINs of every test token.
const (
	soPIN   = "so-secret-1357"
	userPIN = "user-secret-2468"
)

// softhsm is a SoftHSM2 of the test's own.
type softhsm struct {
	module string
	dir    string
	conf   string
}

// newSoftHSM points SOFTHSM2_CONF at a new empty token directory. The
// module reads it at C_Initialize: the backends of one test share it.
func newSoftHSM(t testing.TB) *softhsm {
	t.Helper()
	module := softhsmModule(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	return &softhsm{module: module, dir: dir, conf: conf}
}

// run runs a tool and returns its output, failing the test if it fails.
func (h *softhsm) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+h.conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// initToken initialises a token in a free slot.
func (h *softhsm) initToken(t testing.TB, label string) {
	t.Helper()
	h.run(t, "softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", userPIN)
}

func (h *softhsm) deleteToken(t testing.TB, label string) {
	t.Helper()
	h.run(t, "softhsm2-util", "--delete-token", "--token", label)
}

// tool runs pkcs11-tool logged in to token.
func (h *softhsm) tool(t testing.TB, token string, args ...string) string {
	t.Helper()
	return h.run(t, "pkcs11-tool", append([]string{"--module", h.module, "--token-label", token, "--login", "--pin", userPIN}, args...)...)
}

// keygen generates a private, sensitive AES-256 key, as the docs say to.
func (h *softhsm) keygen(t testing.TB, token, label, id string) {
	t.Helper()
	args := []string{"--keygen", "--key-type", "AES:32", "--label", label, "--private", "--sensitive"}
	if id != "" {
		args = append(args, "--id", id)
	}
	h.tool(t, token, args...)
}

// importKey writes a known AES-256 key onto token (a key restored from
// a backup, or cloned onto another HSM).
func (h *softhsm) importKey(t testing.TB, token, label, id string, key []byte) {
	t.Helper()
	f := filepath.Join(h.dir, "key.bin")
	if err := os.WriteFile(f, key, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f)
	h.tool(t, token, "--write-object", f, "--type", "secrkey", "--key-type", "AES:32", "--label", label, "--id", id,
		"--private", "--sensitive", "--usage-decrypt", "--usage-wrap")
}

func (h *softhsm) deleteKey(t testing.TB, token, label string) {
	t.Helper()
	h.tool(t, token, "--delete-object", "--type", "secrkey", "--label", label)
}

// pinFile writes pin to a file of mode 0600.
func (h *softhsm) pinFile(t testing.TB, pin string) string {
	t.Helper()
	f, err := os.CreateTemp(h.dir, "pin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(pin + "\n"); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// config is a backend's config for the key label on token, with the
// right PIN.
func (h *softhsm) config(t testing.TB, token, label string) Config {
	return Config{Module: h.module, TokenLabel: token, PinFile: h.pinFile(t, userPIN), KeyLabel: label}
}

// backend makes a backend, closed when the test ends.
func (h *softhsm) backend(t testing.TB, name string, cfg Config) *Backend {
	t.Helper()
	b, err := New(context.Background(), name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// ctxFor is a context with the deadline tests give each call.
func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustWrap wraps a share and returns it with its wrapped form.
func mustWrap(t testing.TB, b kmsclients.Backend, aad []byte) ([]byte, kmsclients.Wrapped) {
	t.Helper()
	share := []byte("a share of thirty-three bytes....")
	w, err := b.Wrap(ctxFor(t), share, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return share, w
}
