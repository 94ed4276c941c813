// Package local is a Trousseau backend that wraps shares with AES-256-GCM
// under a 32-byte key kept in a file. It is meant for development, tests,
// and offline break-glass custody (a key file on removable media, or held
// by an officer who mounts it only for recovery).
//
// Config example (in the backends list of the serve config):
//
//   - name: local-a
//     local: {keyFile: /etc/trousseau/a.key}
//
// The key file holds the key in base64 (what GenerateKeyFile writes) or as
// 32 raw bytes. It must not be readable by others. It is read on every
// operation, so that removing it (or the media it is on) takes the backend
// down, and replacing it is noticed by the next probe as a key rotation.
package local

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Config is the YAML block `local: {...}` of a backend.
type Config struct {
	KeyFile string `json:"keyFile"`
}

// Validate names the field at fault.
func (c Config) Validate() error {
	if c.KeyFile == "" {
		return errors.New("local.keyFile: required")
	}
	return nil
}

const (
	keySize       = 32
	formatVersion = 1
	nonceSize     = 12
	identityPfx   = "local:"
	aadPrefix     = "trousseau/local/v1\x00"
)

// Backend is a key-file backend.
type Backend struct {
	name    string
	keyFile string
}

var _ kmsclients.Backend = (*Backend)(nil)

// New returns a backend for cfg. It reads the key once to reject a
// malformed, unreadable or world-readable key file at start. A missing key
// file is not an error here: it is a backend that is down (its media
// unmounted), and a plugin must be able to start with up to n-k backends
// down. Probe reports it.
func New(name string, cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Backend{name: name, keyFile: cfg.KeyFile}
	key, err := b.readKey()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	clear(key)
	return b, nil
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.name }

// Close implements kmsclients.Backend.
func (b *Backend) Close() error { return nil }

// Probe reads the key file and reports its fingerprint.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	key, err := b.readKey()
	if err != nil {
		return "", err
	}
	defer clear(key)
	return identity(key), nil
}

// Wrap seals share under the key file's key, bound to aad.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, err
	}
	key, err := b.readKey()
	if err != nil {
		return kmsclients.Wrapped{}, err
	}
	defer clear(key)
	aead, err := newAEAD(key)
	if err != nil {
		return kmsclients.Wrapped{}, err
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(share)+aead.Overhead())
	out[0] = formatVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return kmsclients.Wrapped{}, fmt.Errorf("local %s: nonce: %w", b.name, err)
	}
	out = aead.Seal(out, out[1:], share, bindAAD(aad))
	return kmsclients.Wrapped{Ciphertext: out, KeyIdentity: identity(key)}, nil
}

// Unwrap opens a share that Wrap sealed.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, err := b.readKey()
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if id := identity(key); w.KeyIdentity != id {
		return nil, fmt.Errorf("local %s: share was wrapped by key %q, the key file holds %q: %w", b.name, w.KeyIdentity, id, kmsclients.ErrInvalidCiphertext)
	}
	ct := w.Ciphertext
	if len(ct) < 1+nonceSize+16 || ct[0] != formatVersion {
		return nil, fmt.Errorf("local %s: malformed wrapped share: %w", b.name, kmsclients.ErrInvalidCiphertext)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	share, err := aead.Open(nil, ct[1:1+nonceSize], ct[1+nonceSize:], bindAAD(aad))
	if err != nil {
		return nil, fmt.Errorf("local %s: wrapped share failed authentication: %w", b.name, kmsclients.ErrInvalidCiphertext)
	}
	return share, nil
}

func (b *Backend) readKey() ([]byte, error) {
	f, err := os.Open(b.keyFile)
	if err != nil {
		kind := kmsclients.ErrUnavailable
		if errors.Is(err, fs.ErrPermission) {
			kind = kmsclients.ErrPermission
		}
		return nil, fmt.Errorf("local %s: key file %s: %w: %w", b.name, b.keyFile, kind, unwrapPathError(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("local %s: key file %s: %w: %w", b.name, b.keyFile, kmsclients.ErrUnavailable, err)
	}
	if perm := st.Mode().Perm(); perm&0o006 != 0 || perm&0o020 != 0 {
		return nil, fmt.Errorf("local %s: key file %s has mode %04o; it must not be readable or writable by others (chmod 600): %w", b.name, b.keyFile, perm, kmsclients.ErrPermission)
	}
	raw, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return nil, fmt.Errorf("local %s: key file %s: %w: %w", b.name, b.keyFile, kmsclients.ErrUnavailable, err)
	}
	defer clear(raw)
	key, err := decodeKey(raw)
	if err != nil {
		return nil, fmt.Errorf("local %s: key file %s: %w: %w", b.name, b.keyFile, err, kmsclients.ErrPermission)
	}
	return key, nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// decodeKey accepts 32 raw bytes or their base64 (standard encoding),
// with surrounding white space.
func decodeKey(raw []byte) ([]byte, error) {
	if len(raw) == keySize {
		return append([]byte(nil), raw...), nil
	}
	text := bytes.TrimSpace(raw)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(key, text)
	if err != nil || n != keySize {
		clear(key)
		return nil, fmt.Errorf("does not hold a %d-byte key (base64 or raw)", keySize)
	}
	return key[:n], nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func bindAAD(aad []byte) []byte {
	return append([]byte(aadPrefix), aad...)
}

// identity is a fingerprint of the key: it tells keys apart without
// revealing anything about them (SHA-256 of a 256-bit random key).
func identity(key []byte) string {
	h := sha256.New()
	h.Write([]byte("trousseau/local/key-fingerprint/v1\x00"))
	h.Write(key)
	return identityPfx + hex.EncodeToString(h.Sum(nil)[:12])
}

// GenerateKeyFile writes a new random key to path, in base64, with mode
// 0600. It refuses to overwrite an existing file.
func GenerateKeyFile(path string) error {
	key := make([]byte, keySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	text := base64.StdEncoding.EncodeToString(key) + "\n"
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync key file: %w", err)
	}
	return f.Close()
}
