package local

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	b, err := New(context.Background(), "local-test", Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	kmstest.Run(t, kmstest.Harness{
		BackendKind: "local",
		New:         func(t *testing.T) kmsclients.Backend { return newBackend(t, newKeyFile(t)) },
		OtherKey:    func(t *testing.T) kmsclients.Backend { return newBackend(t, newKeyFile(t)) },
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
		t.Run(mode.String(), func(t *testing.T) {
			path := newKeyFile(t)
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := newBackend(t, path).Probe(context.Background())
			if !errors.Is(err, kmsclients.ErrPermission) || !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("got %v, want a refusal", err)
			}
		})
	}
	t.Run("group-readable", func(t *testing.T) {
		path := newKeyFile(t)
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := newBackend(t, path).Probe(context.Background()); err != nil {
			t.Errorf("mode 0640 should be accepted: %v", err)
		}
	})
}

func writeKeyFile(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "k.key")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeyFileContents(t *testing.T) {
	raw := make([]byte, 32)
	rand.Read(raw)
	raw[0] = 0xff // not text, whatever the rest
	if _, err := newBackend(t, writeKeyFile(t, raw)).Probe(context.Background()); err != nil {
		t.Errorf("raw 32-byte key refused: %v", err)
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	if _, err := newBackend(t, writeKeyFile(t, []byte("\n "+b64+"\r\n"))).Probe(context.Background()); err != nil {
		t.Errorf("base64 key with white space refused: %v", err)
	}
	// A missing key file is a backend that is down, not a bad config.
	missing := newBackend(t, filepath.Join(t.TempDir(), "missing"))
	if _, err := missing.Probe(context.Background()); !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Errorf("probe of a missing key file: %v, want unavailable", err)
	}
}

// TestNewChecksNameAndConfig: New refuses what config validation would,
// naming the backend and the field, like every backend's New.
func TestNewChecksNameAndConfig(t *testing.T) {
	for _, tc := range []struct{ name, backend, keyFile, want string }{
		{"empty key file", "a", "", "local a: local.keyFile: required"},
		{"bad name", "Local_A", "/k", `local: invalid backend name "Local_A"`},
		{"empty name", "", "/k", `local: invalid backend name ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.backend, Config{KeyFile: tc.keyFile})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestUnusableKeyFileAtStartIsADownBackend: a key file that is
// there but unusable does not stop New (so the plugin starts on the other
// backends); every operation reports it, with what is wrong.
func TestUnusableKeyFileAtStartIsADownBackend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setUp func(t *testing.T) string
		want  string
		kind  error // permission for its mode, invalid for what it holds
	}{
		{"world-readable", func(t *testing.T) string {
			p := newKeyFile(t)
			os.Chmod(p, 0o644)
			return p
		}, "has mode 0644", kmsclients.ErrPermission},
		{"garbage", func(t *testing.T) string { return writeKeyFile(t, []byte("not a key")) }, "holds 9 bytes", kmsclients.ErrInvalidKey},
		{"directory", func(t *testing.T) string { return t.TempDir() }, "is a directory", kmsclients.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(context.Background(), "c", Config{KeyFile: tc.setUp(t)})
			if err != nil {
				t.Fatalf("New refused a present but unusable key file: %v", err)
			}
			ctx := context.Background()
			_, perr := b.Probe(ctx)
			_, werr := b.Wrap(ctx, []byte("share"), nil)
			_, uerr := b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: []byte("x"), KeyIdentity: "local:x"}, nil)
			for op, err := range map[string]error{"Probe": perr, "Wrap": werr, "Unwrap": uerr} {
				if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: %v, want kind %v and %q", op, err, tc.kind, tc.want)
				}
				if prefix := "local c: " + strings.ToLower(op) + ": "; err == nil || !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("%s: %v, want the prefix %q", op, err, prefix)
				}
			}
		})
	}
}

// TestKeyFileMessagesSayWhatIsWrong: each unusable key file is
// described as what it is, never as "permission denied".
func TestKeyFileMessagesSayWhatIsWrong(t *testing.T) {
	fifo := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Skip(err)
		}
		return p
	}
	file := func(b []byte) func(t *testing.T) string {
		return func(t *testing.T) string { return writeKeyFile(t, b) }
	}
	for _, tc := range []struct {
		name  string
		setUp func(t *testing.T) string
		want  string
	}{
		{"wrong length", file([]byte("0123456789abcdef0123456789abcdef0")), "holds 33 bytes, want 32 raw bytes or their base64"},
		{"garbage", file([]byte("!!!!")), "holds 4 bytes, want 32 raw bytes or their base64"},
		{"empty", file(nil), "holds 0 bytes, want 32 raw bytes"},
		{"base64 of a short key", file([]byte("c2hvcnQ=")), "holds 8 bytes, the base64 of 5 bytes, want 32 raw bytes"},
		{"too long", file([]byte(strings.Repeat("A", 300))), "holds more than 256 bytes"},
		{"directory", func(t *testing.T) string { return t.TempDir() }, "is a directory, not a key file"},
		{"fifo", fifo, "is not a regular file"},
		{"password as a raw key", file([]byte("correct-horse-battery-staple-123")), "trousseau keygen"},
		{"password and a newline", file([]byte("correct-horse-battery-staple-1\r\n")), "a password rather than a key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.setUp(t)
			_, err := newBackend(t, path).Probe(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want %q naming %s", err, tc.want, path)
			}
			if strings.Contains(err.Error(), "permission denied") {
				t.Errorf("%v says permission denied", err)
			}
		})
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
