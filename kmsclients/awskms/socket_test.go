package awskms

import (
	"bytes"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/plugintest"
)

// TestThroughThePluginSocket runs the plugin 2 of 3 over two local-kms
// keys and a key file, driven by kube-apiserver's own client.
func TestThroughThePluginSocket(t *testing.T) {
	srv := startLocalKMS(t)
	awsA := newTestBackend(t, "aws-a", srv.Endpoint(), Config{KeyID: key1ARN, EncryptionContext: map[string]string{"cluster": "e2e"}})
	awsB := newTestBackend(t, "aws-b", srv.Endpoint(), Config{KeyID: key2ARN})
	file := plugintest.LocalBackend(t, "break-glass")
	p := plugintest.Start(t, 2, awsA, awsB, file)
	r, seed := p.Encrypt(t)
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}

	// A second plugin (another node: no cache) decrypts with the two AWS keys alone...
	other := plugintest.Start(t, 2, awsA, awsB, plugintest.LocalBackend(t, "break-glass"))
	if got, err := other.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with the key file unknown to this node: %v", err)
	}

	// A third node, whose cache does not hold r's DEK, shares the key file.
	third := plugintest.Start(t, 2, awsA, awsB, file)

	// With AWS gone, the key file alone is not a quorum.
	srv.Stop()
	if h := p.Probe(); !strings.Contains(h, "quorum lost") || !strings.Contains(h, "aws-a") {
		t.Fatalf("healthz with local-kms stopped: %q", h)
	}
	if _, err := third.Decrypt(r); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("cold decrypt with only the key file: %v, want Unavailable", err)
	}
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("a cached DEK must still decrypt: %v", err)
	}

	// local-kms back: works again, no restart of anything.
	srv.Start()
	if h := p.Probe(); h != "ok" {
		t.Fatalf("healthz after local-kms restarted: %q", h)
	}
	if got, err := third.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt after local-kms restarted: %v", err)
	}
}
