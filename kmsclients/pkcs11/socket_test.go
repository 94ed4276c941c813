//go:build cgo

package pkcs11

import (
	"bytes"
	"os"
	"strings"
	"testing"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/internal/plugintest"
)

// backendHealth is what the plugin's last probe says of one backend.
func backendHealth(t *testing.T, p *plugintest.Plugin, name string) (up bool, kind, text string) {
	t.Helper()
	for _, b := range p.Plugin.Prober().Snapshot().Backends {
		if b.Name == name {
			return b.Up, b.Kind, b.Error
		}
	}
	t.Fatalf("the plugin has no backend %s", name)
	return false, "", ""
}

// TestThroughThePluginSocket runs the plugin 2 of 3 over SoftHSM2 and
// two key files, driven by kube-apiserver's own client: another key
// under the HSM key's label rotates the DEK once; with a wrong PIN, or
// the key deleted, the key files still decrypt and the plugin serves.
func TestThroughThePluginSocket(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "socket")
	h.keygen(t, "socket", "trousseau-share", "01")
	cfg := h.config(t, "socket", "trousseau-share")
	cfg.KeyID = "01"
	hsm := h.backend(t, "hsm", cfg)
	fileA, fileB := plugintest.LocalBackend(t, "file-a"), plugintest.LocalBackend(t, "file-b")
	p := plugintest.Start(t, 2, hsm, fileA, fileB)
	r, seed := p.Encrypt(t)
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}
	before := p.Env.KeyID()

	// A new key under the label and ID: the plugin rotates its DEK once.
	h.deleteKey(t, "socket", "trousseau-share")
	h.keygen(t, "socket", "trousseau-share", "01")
	rotated := p.WantRotatedOnce(t, before, "a new key under the HSM key's label")
	r2, seed2 := p.Encrypt(t)
	if r2.KeyID != rotated {
		t.Fatalf("new writes use key_id %q, want %q", r2.KeyID, rotated)
	}

	// Another node (no cache) reads what was written under both keys:
	// the old key's share is refused, the key files make the quorum.
	other := plugintest.Start(t, 2, hsm, fileA, fileB)
	for _, c := range []struct {
		resp *kmsservice.EncryptResponse
		seed []byte
	}{{r, seed}, {r2, seed2}} {
		if got, err := other.Decrypt(c.resp); err != nil || !bytes.Equal(got, c.seed) {
			t.Fatalf("decrypt on another node: %v", err)
		}
	}
	// A node started while the HSM answers (a first DEK needs every
	// backend), with one key file only, needs the HSM.
	onlyA := plugintest.Start(t, 2, hsm, fileA, plugintest.LocalBackend(t, "spare"))
	if got, err := onlyA.Decrypt(r2); err != nil || !bytes.Equal(got, seed2) {
		t.Fatalf("decrypt with the HSM and one key file: %v", err)
	}

	// A wrong PIN: once its sessions close, no new one logs in.
	good, err := os.ReadFile(cfg.PinFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.PinFile, []byte("wrong-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closeAllSessions(t, hsm, idleSlot(t, hsm))
	if hz := p.Probe(); hz != "ok" {
		t.Fatalf("healthz with the HSM refusing the PIN and two key files: %q", hz)
	}
	up, kind, text := backendHealth(t, p, "hsm")
	if up || kind != "permission" || !strings.Contains(text, "CKR_PIN_INCORRECT") || strings.Contains(text, "wrong-pin") {
		t.Fatalf("the HSM backend with a wrong PIN: up %v, kind %s, error %q", up, kind, text)
	}
	if got, err := other.Decrypt(r2); err != nil || !bytes.Equal(got, seed2) {
		t.Fatalf("decrypt with a wrong PIN and two key files: %v", err)
	}
	if _, err := onlyA.Decrypt(r); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("decrypt with a wrong PIN and one key file: %v, want Unavailable", err)
	}
	// The PIN put right: the backend is back without a restart.
	if err := os.WriteFile(cfg.PinFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	p.Probe()
	if up, _, text := backendHealth(t, p, "hsm"); !up {
		t.Fatalf("the HSM backend with the PIN put right: %s", text)
	}

	// The key deleted: permission, and the key files still decrypt.
	h.deleteKey(t, "socket", "trousseau-share")
	if hz := p.Probe(); hz != "ok" {
		t.Fatalf("healthz with the HSM key deleted: %q", hz)
	}
	up, kind, text = backendHealth(t, p, "hsm")
	if up || kind != "permission" || !strings.Contains(text, `has no secret key labelled "trousseau-share" with ID 01`) {
		t.Fatalf("the HSM backend with its key deleted: up %v, kind %s, error %q", up, kind, text)
	}
	if got, err := other.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with the HSM key deleted and two key files: %v", err)
	}
}
