package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// goldenKeyFile holds the key the golden share below was wrapped under.
func goldenKeyFile(t *testing.T) *Backend {
	key := bytes.Repeat([]byte{0x24, 0x81}, keySize/2)
	return newBackend(t, writeKeyFile(t, []byte(base64.StdEncoding.EncodeToString(key)+"\n")))
}

// A share as earlier builds stored it; it must unwrap, FIPS-only too.
const (
	goldenV1Share    = "016bd42f5d1f46a7124969bcad26cfe04f5bb58567e39e2e538d080c3e2af48f06f85a83940b4e50bd"
	goldenIdentity   = "local:8945ff628946676eaea85143"
	goldenShare      = "golden share"
	goldenAAD        = "golden aad"
	wrappedShareSize = 1 + nonceSize + len(goldenShare) + tagSize
)

func TestVersion1ShareStillUnwraps(t *testing.T) {
	b := goldenKeyFile(t)
	ct, _ := hex.DecodeString(goldenV1Share)
	got, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: ct, KeyIdentity: goldenIdentity}, []byte(goldenAAD))
	if err != nil || string(got) != goldenShare {
		t.Fatalf("Unwrap: %q, %v", got, err)
	}
}

// Wrap writes version 1, which every earlier release unwraps, in every mode.
func TestWrapWritesVersion1(t *testing.T) {
	b := goldenKeyFile(t)
	w, err := b.Wrap(context.Background(), []byte(goldenShare), []byte(goldenAAD))
	if err != nil {
		t.Fatal(err)
	}
	if w.Ciphertext[0] != 1 || len(w.Ciphertext) != wrappedShareSize || w.KeyIdentity != goldenIdentity {
		t.Fatalf("wrapped share: version %d, %d bytes, identity %s", w.Ciphertext[0], len(w.Ciphertext), w.KeyIdentity)
	}
	// The version is authenticated: a share passed off as the other
	// version does not open.
	for _, v := range []byte{2, 3} {
		forged := append([]byte{v}, w.Ciphertext[1:]...)
		_, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: forged, KeyIdentity: w.KeyIdentity}, []byte(goldenAAD))
		if !errors.Is(err, kmsclients.ErrInvalidCiphertext) {
			t.Errorf("version 1 share relabelled %d: %v, want invalid ciphertext", v, err)
		}
	}
}

// Version 2, which development builds wrote, still unwraps.
func TestVersion2ShareStillUnwraps(t *testing.T) {
	b := goldenKeyFile(t)
	key, err := b.readKey(kmsclients.OpWrap)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	v2 := aead.Seal([]byte{2}, nil, []byte(goldenShare), bindAAD(2, []byte(goldenAAD)))
	got, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: v2, KeyIdentity: goldenIdentity}, []byte(goldenAAD))
	if err != nil || string(got) != goldenShare {
		t.Fatalf("Unwrap: %q, %v", got, err)
	}
}
