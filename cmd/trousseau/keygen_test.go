package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeygenEncryptDecryptExitCodes runs the real binaries: keygen exits
// 0 and then 1 rather than overwrite; encrypt and decrypt exit 0 through
// a running plugin, and 1 on what it refuses or with no plugin.
func TestKeygenEncryptDecryptExitCodes(t *testing.T) {
	key := filepath.Join(shortTemp(t), "k.key")
	if out, _, code := runBin(t, "", "keygen", key); code != 0 || out != "created "+key+"\n" {
		t.Fatalf("keygen: exit %d %q", code, out)
	}
	if _, stderr, code := runBin(t, "", "keygen", key); code != 1 || !strings.Contains(stderr, "trousseau: ") {
		t.Fatalf("keygen over a key file: exit %d %q", code, stderr)
	}

	c := newDevCase(t)
	serveBin(t, c)
	sealed, stderr, code := runBin(t, "a DEK seed", "encrypt", "--socket", c.socket)
	var m struct{ KeyID, Ciphertext string }
	if code != 0 || json.Unmarshal([]byte(sealed), &m) != nil || m.KeyID == "" || m.Ciphertext == "" {
		t.Fatalf("encrypt: exit %d %q %s", code, sealed, stderr)
	}
	if plain, _, code := runBin(t, sealed, "decrypt", "--socket", c.socket); code != 0 || plain != "a DEK seed" {
		t.Fatalf("decrypt: exit %d %q", code, plain)
	}
	if _, stderr, code := runBin(t, `{"keyID":"x","ciphertext":"AAAA","annotations":{}}`, "decrypt", "--socket", c.socket); code != 1 || !strings.Contains(stderr, "InvalidArgument") {
		t.Fatalf("decrypt of garbage: exit %d %q", code, stderr)
	}
	if _, _, code := runBin(t, "seed", "encrypt", "--socket", filepath.Join(c.dir, "none.sock")); code != 1 {
		t.Fatalf("encrypt with no plugin: exit %d", code)
	}
}
