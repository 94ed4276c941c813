package vault

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/plugintest"
)

// TestThroughThePluginSocket runs the plugin 2 of 3 over two transit keys
// of a real Vault and a key file, driven by kube-apiserver's own client.
func TestThroughThePluginSocket(t *testing.T) {
	s := startVault(t)
	s.createKey(t, "socket-a", "")
	s.createKey(t, "socket-b", "")
	auth := s.appRoleAuth(t)
	vaultA := newTestBackend(t, "vault-a", s.config("socket-a", auth))
	vaultB := newTestBackend(t, "vault-b", s.config("socket-b", auth))
	file := plugintest.LocalBackend(t, "break-glass")
	p := plugintest.Start(t, 2, vaultA, vaultB, file)
	r, seed := p.Encrypt(t)
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}

	// Another node (no cached DEK), sharing the key file.
	other := plugintest.Start(t, 2, vaultA, vaultB, file)

	// Vault stopped: a DEK that is not cached cannot be unwrapped. The
	// caller learns how far it got in numbers; backend names and Vault's
	// address stay in the plugin's log.
	s.stop()
	_, err := other.Decrypt(r)
	if err == nil || !strings.Contains(err.Error(), "Unavailable") || !strings.Contains(err.Error(), "2 of 3 needed") ||
		strings.Contains(err.Error(), "vault-a") || strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("cold decrypt with Vault stopped: %v", err)
	}
	if h := p.Probe(); !strings.Contains(h, "quorum lost") {
		t.Fatalf("healthz with Vault stopped: %q", h)
	}

	// Vault back (restarted, unsealed): works again, no plugin restart.
	s.start(t)
	s.unseal(t)
	if got, err := other.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt after Vault came back: %v", err)
	}

	// One transit key deleted for good: the other Vault key and the key
	// file are still a quorum.
	s.write(t, "transit/keys/socket-a/config", map[string]any{"deletion_allowed": true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin(t).Logical().DeleteWithContext(ctx, "transit/keys/socket-a"); err != nil {
		t.Fatalf("delete transit key: %v", err)
	}
	// A new node configured without vault-a.
	fresh := plugintest.Start(t, 2, vaultB, file, plugintest.LocalBackend(t, "spare"))
	if got, err := fresh.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with socket-a deleted: %v", err)
	}
}
