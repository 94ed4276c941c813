//go:build cgo

package pkcs11

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/plugintest"
	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// TestServeOverSoftHSM runs the real `trousseau serve` binary (a cgo
// build), 2 of 3 over a SoftHSM2 token and two key files, driven by
// kube-apiserver's KMS v2 client and EncryptionConfiguration
// transformer. Another key under the HSM key's label rotates the DEK
// once; with a wrong PIN, and then with the key deleted, the plugin
// serves on the key files, restarts, reads everything written before,
// and says in its log what is wrong with the HSM.
func TestServeOverSoftHSM(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "serve")
	h.keygen(t, "serve", "share", "01")
	pinFile := h.pinFile(t, userPIN)
	dir, bin := plugintest.BuildInShortDir(t)
	keys := [2]string{filepath.Join(dir, "file-a.key"), filepath.Join(dir, "file-b.key")}
	for _, k := range keys {
		if err := local.GenerateKeyFile(k); err != nil {
			t.Fatal(err)
		}
	}
	socket, config := filepath.Join(dir, "kms.sock"), filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`socket: %s
stateDir: %s
threshold: 2
health: {listen: "127.0.0.1:%d", probeInterval: 1s, probeTimeout: 1s}
backends:
  - name: hsm
    pkcs11: {module: %s, tokenLabel: serve, pinFile: %s, keyLabel: share, keyID: "01"}
  - name: file-a
    local: {keyFile: %s}
  - name: file-b
    local: {keyFile: %s}
`, socket, filepath.Join(dir, "state"), testutil.FreePort(t), h.module, pinFile, keys[0], keys[1])
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "SOFTHSM2_CONF=" + h.conf}

	p := plugintest.StartServe(t, bin, env, config, socket)
	tr := plugintest.Transformer(t, dir, socket)
	first := plugintest.WriteThrough(t, tr, "first")
	r, seed := p.Encrypt(t)
	keyID := p.WaitKeyID(t, func(string) bool { return true })

	// Another key under the label and ID: a new key identity, one
	// rotation.
	h.deleteKey(t, "serve", "share")
	h.keygen(t, "serve", "share", "01")
	rotated := p.WaitKeyID(t, func(id string) bool { return id != keyID })
	time.Sleep(3 * time.Second) // three more probes
	if st := p.Status(t); st.KeyID != rotated || st.Healthz != "ok" {
		t.Fatalf("after the rotation, key_id %q -> %q (healthz %q): rotated more than once", rotated, st.KeyID, st.Healthz)
	}
	second := plugintest.WriteThrough(t, tr, "second")

	// check restarts the plugin, so that every DEK is unlocked again
	// from what answers now, and reads back through a new apiserver.
	check := func(when, logged string) {
		t.Helper()
		p.Stop(t)
		p = plugintest.StartServe(t, bin, env, config, socket)
		if st := p.Status(t); st.KeyID != rotated || st.Healthz != "ok" {
			t.Fatalf("%s: key_id %q healthz %q, want %q ok", when, st.KeyID, st.Healthz, rotated)
		}
		if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
			t.Fatalf("%s: decrypt of the first seed: %v", when, err)
		}
		other := plugintest.Transformer(t, dir, socket)
		plugintest.ReadBack(t, other, first)
		plugintest.ReadBack(t, other, second)
		plugintest.ReadBack(t, other, plugintest.WriteThrough(t, other, when))
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(p.Out.String(), logged) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the log does not say %q:\n%s", when, logged, p.Out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	if err := os.WriteFile(pinFile, []byte("not-the-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("wrong PIN", "CKR_PIN_INCORRECT")
	if err := os.WriteFile(pinFile, []byte(userPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.deleteKey(t, "serve", "share")
	check("key deleted", `has no secret key labelled \"share\" with ID 01`)
	if log := p.Out.String(); strings.Contains(log, userPIN) || strings.Contains(log, "not-the-pin") {
		t.Fatal("a PIN reached the log")
	}
}
