package gcpkms

import (
	"bytes"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/plugintest"
)

// TestThroughThePluginSocket runs the plugin 2 of 3 over the fake Cloud
// KMS (through the real client) and two key files, driven by
// kube-apiserver's own client: a primary-version rotation in Cloud KMS
// rotates the DEK once, and with Cloud KMS gone the key files still
// decrypt.
func TestThroughThePluginSocket(t *testing.T) {
	f := startFake(t, testKey)
	gcp := newTestBackend(t, f, testKey)
	fileA, fileB := plugintest.LocalBackend(t, "file-a"), plugintest.LocalBackend(t, "file-b")
	p := plugintest.Start(t, 2, gcp, fileA, fileB)
	r, seed := p.Encrypt(t)
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}
	before := p.Env.KeyID()

	// A new primary version in Cloud KMS: the prober sees a new key
	// identity and the plugin rotates its DEK, once.
	f.addVersion(t, testKey)
	rotated := p.WantRotatedOnce(t, before, "a Cloud KMS primary-version rotation")
	r2, seed2 := p.Encrypt(t)
	if r2.KeyID != rotated {
		t.Fatalf("new writes use key_id %q, want %q", r2.KeyID, rotated)
	}

	// Another node (no cache) reads what was written under both primary
	// versions.
	other := plugintest.Start(t, 2, gcp, fileA, fileB)
	for _, c := range []struct {
		old  bool
		seed []byte
	}{{true, seed}, {false, seed2}} {
		resp := r2
		if c.old {
			resp = r
		}
		if got, err := other.Decrypt(resp); err != nil || !bytes.Equal(got, c.seed) {
			t.Fatalf("decrypt on another node (written before the rotation: %v): %v", c.old, err)
		}
	}

	// Two more nodes, started while Cloud KMS answers (a first DEK needs
	// every backend): one with both key files, one with only file-a.
	both := plugintest.Start(t, 2, gcp, fileA, fileB)
	onlyA := plugintest.Start(t, 2, gcp, fileA, plugintest.LocalBackend(t, "spare"))

	// Cloud KMS gone: the two key files are still a quorum; one is not.
	f.stop()
	if got, err := both.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with Cloud KMS stopped and both key files: %v", err)
	}
	if got, err := both.Decrypt(r2); err != nil || !bytes.Equal(got, seed2) {
		t.Fatalf("decrypt with Cloud KMS stopped and both key files: %v", err)
	}
	if _, err := onlyA.Decrypt(r); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("decrypt with Cloud KMS stopped and one key file: %v, want Unavailable", err)
	}
	if h := p.Probe(); h != "ok" {
		t.Fatalf("healthz of a node with 2 of 3 backends up: %q", h)
	}
	if got, err := p.Decrypt(r2); err != nil || !bytes.Equal(got, seed2) {
		t.Fatalf("decrypt on the first node with Cloud KMS stopped: %v", err)
	}
}
