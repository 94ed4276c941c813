// Package local is a Trousseau backend that wraps shares with AES-256-GCM
// under a key in a file, for development, tests and offline break-glass
// custody (a key file on removable media).
//
// Config example (in the backends list of the serve config):
//
//   - name: local-a
//     local: {keyFile: /etc/trousseau/a.key}
//
// The key file is read on every operation, so that removing it takes the
// backend down and replacing it is a key rotation; docs/backends/local.md
// has its format and rules.
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

// A wrapped share, version 1:
//
//	version 1 | nonce [12] | AES-256-GCM(key, nonce, share, "trousseau/local/v1" 0x00 | aad)
//
// The nonce comes from the Go cryptographic module, so fips140=only
// accepts it. Version 2 (same layout, "v2" label) was written by
// development builds only and is still read; the label keeps either from
// passing for the other.
const (
	keySize     = 32
	nonceSize   = 12
	tagSize     = 16
	identityPfx = "local:"
)

var aadPrefixes = map[byte]string{1: "trousseau/local/v1\x00", 2: "trousseau/local/v2\x00"}

const formatVersion = 1

// Backend is a key-file backend.
type Backend struct {
	src     kmsclients.Source
	keyFile string
}

var _ kmsclients.Backend = (*Backend)(nil)

// New checks name and cfg and reads nothing: a bad or missing key file
// is a backend that is down (its media may be unmounted), not a wrong
// config, so a plugin starts with up to n-k of them.
func New(_ context.Context, name string, cfg Config) (*Backend, error) {
	src := kmsclients.Source{Backend: "local", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	return &Backend{src: src, keyFile: cfg.KeyFile}, nil
}

// Name implements [kmsclients.Backend].
func (b *Backend) Name() string { return b.src.Name }

// Close implements [kmsclients.Backend].
func (b *Backend) Close() error { return nil }

// Probe reads the key file and reports its fingerprint.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", b.src.Fail(ctx, kmsclients.OpProbe, nil, err)
	}
	key, err := b.readKey(kmsclients.OpProbe)
	if err != nil {
		return "", err
	}
	defer clear(key)
	return identity(key), nil
}

// Wrap seals share under the key file's key, bound to aad.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, b.src.Fail(ctx, kmsclients.OpWrap, nil, err)
	}
	key, err := b.readKey(kmsclients.OpWrap)
	if err != nil {
		return kmsclients.Wrapped{}, err
	}
	defer clear(key)
	aead, err := newAEAD(key)
	if err != nil {
		return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, nil, "%w", err)
	}
	out := aead.Seal([]byte{formatVersion}, nil, share, bindAAD(formatVersion, aad))
	return kmsclients.Wrapped{Ciphertext: out, KeyIdentity: identity(key)}, nil
}

// Unwrap opens a share that Wrap sealed.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	const op = kmsclients.OpUnwrap
	if err := ctx.Err(); err != nil {
		return nil, b.src.Fail(ctx, op, nil, err)
	}
	key, err := b.readKey(op)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	invalid := kmsclients.ErrInvalidCiphertext
	if id := identity(key); w.KeyIdentity != id {
		return nil, b.src.Errorf(op, invalid, "share was wrapped by key %q, the key file holds %q", w.KeyIdentity, id)
	}
	ct := w.Ciphertext
	if len(ct) < 1+nonceSize+tagSize || aadPrefixes[ct[0]] == "" {
		return nil, b.src.Errorf(op, invalid, "malformed wrapped share")
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, b.src.Errorf(op, nil, "%w", err)
	}
	share, err := aead.Open(nil, nil, ct[1:], bindAAD(ct[0], aad))
	if err != nil {
		return nil, b.src.Errorf(op, invalid, "wrapped share failed authentication")
	}
	return share, nil
}

// maxKeyFileSize bounds what is read of a key file.
const maxKeyFileSize = 256

// readKey reads and checks the key file; it is called on every operation.
func (b *Backend) readKey(op string) ([]byte, error) {
	f, err := b.openKeyFile(op)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, b.src.Errorf(op, kmsclients.ErrUnavailable, "key file %s: %w", b.keyFile, err)
	}
	defer clear(raw)
	key, err := decodeKey(raw)
	if err != nil {
		return nil, b.unusable(op, kmsclients.ErrInvalidKey, "%v", err)
	}
	return key, nil
}

// openKeyFile opens the key file once it is a regular file (opening a
// FIFO would block) closed to others.
func (b *Backend) openKeyFile(op string) (*os.File, error) {
	st, err := os.Stat(b.keyFile)
	if err != nil {
		return nil, b.openError(op, err)
	}
	if err := b.checkType(op, st); err != nil {
		return nil, err
	}
	f, err := os.Open(b.keyFile)
	if err != nil {
		return nil, b.openError(op, err)
	}
	// Stat the open file too: the path may have been replaced meanwhile.
	if st, err = f.Stat(); err == nil {
		err = b.checkType(op, st)
	}
	if err == nil {
		err = b.checkMode(op, st)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openError: a missing file (unmounted media) may come back; a refusal
// needs an operator.
func (b *Backend) openError(op string, err error) error {
	kind := kmsclients.ErrUnavailable
	if errors.Is(err, fs.ErrPermission) {
		kind = kmsclients.ErrPermission
	}
	return b.src.Errorf(op, kind, "key file %s: %w", b.keyFile, unwrapPathError(err))
}

func (b *Backend) checkType(op string, st fs.FileInfo) error {
	switch {
	case st.IsDir():
		return b.unusable(op, kmsclients.ErrInvalidKey, "is a directory, not a key file: point local.keyFile at a file that `trousseau keygen` made")
	case !st.Mode().IsRegular():
		return b.unusable(op, kmsclients.ErrInvalidKey, "is not a regular file (%s): point local.keyFile at a file that `trousseau keygen` made", st.Mode().Type())
	}
	return nil
}

func (b *Backend) checkMode(op string, st fs.FileInfo) error {
	if bad := kmsclients.SecretFileMode(st.Mode().Perm()); bad != "" {
		return b.unusable(op, kmsclients.ErrPermission, "%s", bad)
	}
	return nil
}

// unusable is the error of a key file that is there but unusable, of
// kind (permission for its mode, invalid for its content).
func (b *Backend) unusable(op string, kind error, format string, args ...any) error {
	return b.src.Errorf(op, kind, "key file %s %s", b.keyFile, fmt.Sprintf(format, args...))
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// decodeKey accepts 32 raw bytes or their base64. 32 bytes of text are
// refused: a password, far weaker than a key (a random key is all text
// once in about 10^14).
func decodeKey(raw []byte) ([]byte, error) {
	const want = "want 32 raw bytes or their base64 (`trousseau keygen FILE` makes one)"
	switch {
	case len(raw) > maxKeyFileSize:
		return nil, fmt.Errorf("holds more than %d bytes, %s", maxKeyFileSize, want)
	case len(raw) == keySize && isText(raw):
		return nil, fmt.Errorf("holds %d characters of text, a password rather than a key; a raw key must be %d random bytes: make one with `trousseau keygen FILE`, or write the key in base64", keySize, keySize)
	case len(raw) == keySize:
		return append([]byte(nil), raw...), nil
	}
	text := bytes.TrimSpace(raw)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(key, text)
	if err == nil && n == keySize {
		return key[:n], nil
	}
	clear(key)
	if err == nil && n > 0 {
		return nil, fmt.Errorf("holds %d bytes, the base64 of %d bytes, %s", len(raw), n, want)
	}
	return nil, fmt.Errorf("holds %d bytes, %s", len(raw), want)
}

// isText reports whether b is all printable ASCII or white space.
func isText(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 || c > 0x7e) && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// newAEAD is AES-256-GCM with the nonce made by Seal and put first.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func bindAAD(version byte, aad []byte) []byte {
	return append([]byte(aadPrefixes[version]), aad...)
}

// identity is a fingerprint that tells keys apart, revealing nothing.
func identity(key []byte) string {
	h := sha256.New()
	h.Write([]byte("trousseau/local/key-fingerprint/v1\x00"))
	h.Write(key)
	return identityPfx + hex.EncodeToString(h.Sum(nil)[:12])
}

// GenerateKeyFile writes a new random key to path in base64, mode 0600,
// never over an existing file.
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
