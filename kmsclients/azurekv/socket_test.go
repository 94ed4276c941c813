package azurekv

import (
	"bytes"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/plugintest"
)

// TestThroughThePluginSocket runs the plugin 2 of 3 over the faked Azure
// vault (real RSA behind the SDK's fake transport) and two key files,
// driven by kube-apiserver's own client.
func TestThroughThePluginSocket(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa3072")
	azure := newTestBackend(t, v, testConfig("trousseau"))
	fileA, fileB := plugintest.LocalBackend(t, "file-a"), plugintest.LocalBackend(t, "file-b")
	p := plugintest.Start(t, 2, azure, fileA, fileB)
	r, seed := p.Encrypt(t)
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}
	keyID := r.KeyID

	// A new key version in Azure (rotation): the prober notices it and
	// the plugin rotates its DEK; what was written before still decrypts.
	v.addVersion(t, "trousseau", "rsa3072")
	if h := p.Probe(); h != "ok" {
		t.Fatalf("healthz: %q", h)
	}
	if p.Env.KeyID() == keyID {
		t.Fatal("an Azure key rotation did not rotate the DEK")
	}
	other := plugintest.Start(t, 2, azure, fileA, fileB)
	if got, err := other.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt of data wrapped under the old Azure key version: %v", err)
	}

	// Two more nodes, started while Azure answers (a first DEK needs all
	// backends): one with both key files, one with only file-a.
	both := plugintest.Start(t, 2, azure, fileA, fileB)
	onlyA := plugintest.Start(t, 2, azure, fileA, plugintest.LocalBackend(t, "spare"))

	// Azure down: the two key files are still a quorum; one is not.
	v.down.Store(true)
	if got, err := both.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with Azure down and both key files: %v", err)
	}
	if _, err := onlyA.Decrypt(r); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("decrypt with Azure down and one key file: %v, want Unavailable", err)
	}
	// Its own DEK is another matter: file-a and spare are a quorum for it.
	if h := onlyA.Probe(); h != "ok" {
		t.Fatalf("healthz of a node with 2 of 3 backends up: %q", h)
	}
}
