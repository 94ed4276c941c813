package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// FuzzUnwrap: shares come from etcd and the state file, so any forged
// share, identity or aad is invalid ciphertext, never a panic; only
// Wrap's own opens, under its aad and identity.
func FuzzUnwrap(f *testing.F) {
	ctx := context.Background()
	b := newBackend(f, newKeyFile(f))
	aad, share := []byte("dek-1/share-0"), []byte("share")
	w, err := b.Wrap(ctx, share, aad)
	if err != nil {
		f.Fatal(err)
	}
	ct := w.Ciphertext
	f.Add(ct, aad, w.KeyIdentity)
	f.Add(ct, []byte("dek-1/share-1"), w.KeyIdentity)
	f.Add(ct, aad, identityPfx+"000000000000000000000000")
	f.Add(ct[:len(ct)-1], aad, w.KeyIdentity)
	f.Add(append([]byte{formatVersion + 1}, ct[1:]...), aad, w.KeyIdentity)
	f.Add([]byte{formatVersion}, aad, w.KeyIdentity)
	f.Add([]byte{}, []byte{}, "")
	f.Fuzz(func(t *testing.T, ct, a []byte, id string) {
		got, err := b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: ct, KeyIdentity: id}, a)
		if err != nil {
			if !errors.Is(err, kmsclients.ErrInvalidCiphertext) {
				t.Fatalf("Unwrap: %v, want invalid ciphertext", err)
			}
			return
		}
		if !bytes.Equal(ct, w.Ciphertext) || !bytes.Equal(a, aad) || id != w.KeyIdentity || !bytes.Equal(got, share) {
			t.Fatalf("Unwrap opened a share Wrap did not make: %x (aad %q, key %q) gave %q", ct, a, id, got)
		}
	})
}

// FuzzDecodeKey: decodeKey gives a 32-byte key or an error, never a
// panic; passwords and oversized files are refused, and an accepted key
// reads back from GenerateKeyFile's base64.
func FuzzDecodeKey(f *testing.F) {
	raw := bytes.Repeat([]byte{0x80, 0x01}, keySize/2)
	f.Add(raw)
	f.Add([]byte(base64.StdEncoding.EncodeToString(raw) + "\n"))
	f.Add([]byte(" \t" + base64.StdEncoding.EncodeToString(raw) + "\r\n"))
	f.Add([]byte(base64.StdEncoding.EncodeToString(raw[:keySize-1])))
	f.Add([]byte("correct horse battery staple 123"))
	f.Add(bytes.Repeat([]byte("A"), maxKeyFileSize+1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		key, err := decodeKey(raw)
		if err != nil {
			if len(raw) == keySize && !isText(raw) {
				t.Fatalf("decodeKey refused 32 raw bytes that are not text: %v", err)
			}
			return
		}
		switch {
		case len(key) != keySize:
			t.Fatalf("decodeKey(%q) gave a key of %d bytes", raw, len(key))
		case len(raw) > maxKeyFileSize:
			t.Fatalf("decodeKey accepted %d bytes, over the limit %d", len(raw), maxKeyFileSize)
		case len(raw) == keySize && isText(raw):
			t.Fatalf("decodeKey accepted 32 characters of text %q as a key", raw)
		case len(raw) == keySize && !bytes.Equal(key, raw):
			t.Fatalf("decodeKey(%x) = %x, want the raw bytes", raw, key)
		}
		again, err := decodeKey([]byte(base64.StdEncoding.EncodeToString(key) + "\n"))
		if err != nil || !bytes.Equal(again, key) {
			t.Fatalf("the base64 of key %x reads back as %x, %v", key, again, err)
		}
	})
}
