package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

func newKeyFile(t testing.TB) string {
	path := filepath.Join(t.TempDir(), "k.key")
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func newBackend(t testing.TB, path string) *Backend {
	b, err := New("local-test", Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	kmstest.Run(t, kmstest.Harness{
		New:      func(t *testing.T) kmsclients.Backend { return newBackend(t, newKeyFile(t)) },
		OtherKey: func(t *testing.T) kmsclients.Backend { return newBackend(t, newKeyFile(t)) },
		Unavailable: func(t *testing.T) kmsclients.Backend {
			path := newKeyFile(t)
			b := newBackend(t, path)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			return b
		},
	})
}

func TestKeyFileModeChecked(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o604, 0o666, 0o620} {
		path := newKeyFile(t)
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := New("a", Config{KeyFile: path})
		if err == nil || !errors.Is(err, kmsclients.ErrPermission) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: got %v, want a refusal", mode, err)
		}
	}
	path := newKeyFile(t)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := New("a", Config{KeyFile: path}); err != nil {
		t.Errorf("mode 0640 (group-readable) should be accepted: %v", err)
	}
}

func TestKeyFileContents(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := write("raw", []byte("0123456789abcdef0123456789abcdef"))
	if _, err := New("a", Config{KeyFile: raw}); err != nil {
		t.Errorf("raw 32-byte key refused: %v", err)
	}
	for name, content := range map[string][]byte{
		"short":    []byte("c2hvcnQ="),
		"empty":    nil,
		"not-b64":  []byte("!!!!"),
		"too-long": []byte(strings.Repeat("A", 300)),
		"33-bytes": []byte("0123456789abcdef0123456789abcdef0"),
	} {
		if _, err := New("a", Config{KeyFile: write(name, content)}); err == nil {
			t.Errorf("%s key file accepted", name)
		}
	}
	// A missing key file is a backend that is down, not a bad config.
	missing, err := New("a", Config{KeyFile: filepath.Join(dir, "missing")})
	if err != nil {
		t.Fatalf("missing key file refused at New: %v", err)
	}
	if _, err := missing.Probe(context.Background()); !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Errorf("probe of a missing key file: %v, want unavailable", err)
	}
	if _, err := New("a", Config{}); err == nil || !strings.Contains(err.Error(), "local.keyFile") {
		t.Errorf("empty config: %v, want an error naming local.keyFile", err)
	}
}

func TestGenerateKeyFileRefusesOverwrite(t *testing.T) {
	path := newKeyFile(t)
	before, _ := os.ReadFile(path)
	if err := GenerateKeyFile(path); err == nil {
		t.Fatal("overwrote an existing key file")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("key file changed")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", st.Mode().Perm())
	}
}

func TestReplacedKeyFileIsANewIdentity(t *testing.T) {
	path := newKeyFile(t)
	b := newBackend(t, path)
	ctx := context.Background()
	w, err := b.Wrap(ctx, []byte("share"), nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	id, err := b.Probe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id == w.KeyIdentity {
		t.Fatal("a new key file kept the old identity")
	}
	if _, err := b.Unwrap(ctx, w, nil); !errors.Is(err, kmsclients.ErrInvalidCiphertext) {
		t.Fatalf("unwrap under the replaced key: %v", err)
	}
}
