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

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// TestConfigCheck runs the real binary's `config check` on a config of a
// pkcs11 backend on SoftHSM2 and two key files: it shows the token, the
// key and its identity; a module that does not load stops it with an
// error naming pkcs11.module; a binary built without cgo says what it
// lacks.
func TestConfigCheck(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "check")
	h.keygen(t, "check", "share", "01")
	cfg := h.config(t, "check", "share")
	cfg.KeyID = "01"
	want, err := h.backend(t, "hsm", cfg).Probe(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(module string) string {
		keys := make([]string, 2)
		for i := range keys {
			keys[i] = filepath.Join(dir, "file-"+string(rune('a'+i))+".key")
			if _, err := os.Stat(keys[i]); err != nil {
				if err := local.GenerateKeyFile(keys[i]); err != nil {
					t.Fatal(err)
				}
			}
		}
		path := filepath.Join(dir, "config.yaml")
		text := "socket: " + filepath.Join(dir, "kms.sock") + "\nstateDir: " + filepath.Join(dir, "state") + "\nthreshold: 2\nbackends:\n" +
			"  - name: hsm\n    pkcs11:\n      module: " + module + "\n      tokenLabel: check\n      pinFile: " + cfg.PinFile +
			"\n      keyLabel: share\n      keyID: \"01\"\n" +
			"  - name: file-a\n    local: {keyFile: " + keys[0] + "}\n" +
			"  - name: file-b\n    local: {keyFile: " + keys[1] + "}\n"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	check := func(bin, config string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "config", "check", "--config", config).CombinedOutput()
		return string(out), err
	}

	bin, err := testutil.BuildTrousseau(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, err := check(bin, write(h.module))
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	line := ""
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "hsm ") {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 3 || f[1] != "yes" || f[2] != want || !strings.HasPrefix(want, "pkcs11:token=check;serial=") ||
		!strings.Contains(want, ";object=share;id=%01;x-check-value=") {
		t.Fatalf("config check shows the HSM backend as %q, want it reachable with identity %s:\n%s", line, want, out)
	}

	out, err = check(bin, write(filepath.Join(dir, "absent.so")))
	if err == nil || !strings.Contains(out, "pkcs11 hsm: pkcs11.module: "+filepath.Join(dir, "absent.so")+": no such file or directory") {
		t.Fatalf("config check with a module that is not there: %v\n%s", err, out)
	}

	noCgo := filepath.Join(t.TempDir(), "trousseau")
	build := exec.Command("go", "build", "-o", noCgo, "./cmd/trousseau")
	build.Dir = testutil.RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	out, err = check(noCgo, write(h.module))
	if err == nil || !strings.Contains(out, "pkcs11 hsm: this trousseau was built without cgo; the pkcs11 backend needs a cgo build") {
		t.Fatalf("config check by a binary built without cgo: %v\n%s", err, out)
	}
}
