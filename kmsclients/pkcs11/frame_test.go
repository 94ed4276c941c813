package pkcs11

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

func TestFrameRoundTrip(t *testing.T) {
	gcm := append(bytes.Repeat([]byte{7}, ivSize), bytes.Repeat([]byte{9}, 33+tagSize)...)
	kwp := bytes.Repeat([]byte{5}, 64)
	for _, c := range []struct {
		m    mechanism
		body []byte
	}{{mechGCM, gcm}, {mechKWP, kwp}} {
		m, body, err := unframe(frame(c.m, c.body))
		if err != nil || m != c.m || !bytes.Equal(body, c.body) {
			t.Fatalf("%s: round trip gave %v %x %v", c.m, m, body, err)
		}
	}
}

// TestStoredFormatUnchanged: shares stored by an earlier release (these
// frames were made by the backend's own code before kmsclients.Framing)
// still decode, and Wrap still stores the same bytes.
func TestStoredFormatUnchanged(t *testing.T) {
	gcm := append(append(bytes.Repeat([]byte{0x11}, ivSize), 0x22, 0x23), bytes.Repeat([]byte{0x33}, tagSize)...)
	for _, tc := range []struct {
		stored string
		m      mechanism
		body   []byte
	}{
		{"0101111111111111111111111111222333333333333333333333333333333333", mechGCM, gcm},
		{"01024444444444444444444444444444444444444444444444444444444444444444", mechKWP, bytes.Repeat([]byte{0x44}, 32)},
	} {
		stored, _ := hex.DecodeString(tc.stored)
		m, body, err := unframe(stored)
		if err != nil || m != tc.m || !bytes.Equal(body, tc.body) {
			t.Fatalf("unframe(%s) = %v, %x, %v", tc.stored, m, body, err)
		}
		if got := frame(m, body); !bytes.Equal(got, stored) {
			t.Fatalf("frame = %x, want %s", got, tc.stored)
		}
	}
}

func TestUnframeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "of 0 bytes"},
		{"version only", []byte{framing.Version}, "of 1 bytes"},
		{"version 2", append([]byte{2, byte(mechGCM)}, make([]byte, 40)...), "format version 2"},
		{"unknown mechanism", append([]byte{framing.Version, 3}, make([]byte, 40)...), "unknown mechanism 3"},
		{"gcm without ciphertext", frame(mechGCM, make([]byte, ivSize+tagSize)), "(aes-gcm) has 28 bytes"},
		{"kwp too short", frame(mechKWP, make([]byte, 24)), "has 24 bytes"},
		{"kwp not a multiple of 8", frame(mechKWP, make([]byte, 33)), "has 33 bytes"},
		{"too long", frame(mechKWP, make([]byte, kmsclients.MaxWrappedSize)), "of 4098 bytes"},
	} {
		if _, _, err := unframe(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestSealKWP(t *testing.T) {
	aad := []byte("dek=1;share=2")
	for n := 1; n <= 40; n++ {
		share := bytes.Repeat([]byte{0xa5}, n)
		sealed := sealKWP(share, aad)
		if len(sealed)%kwpBlock != 0 || len(sealed) < bindingSize+lengthSize+n || len(sealed) >= bindingSize+lengthSize+n+kwpBlock {
			t.Fatalf("share of %d: sealed to %d bytes", n, len(sealed))
		}
		got, ok := openKWP(sealed, aad)
		if !ok || !bytes.Equal(got, share) {
			t.Fatalf("share of %d does not open", n)
		}
		if _, ok := openKWP(sealed, []byte("dek=1;share=3")); ok {
			t.Fatal("opened with other associated data")
		}
		for i := range bindingSize {
			bad := bytes.Clone(sealed)
			bad[i] ^= 1
			if _, ok := openKWP(bad, aad); ok {
				t.Fatalf("share of %d: a flip of byte %d of the binding went unnoticed", n, i)
			}
		}
	}
	if _, ok := openKWP(append(sealKWP([]byte{1}, aad), make([]byte, kwpBlock)...), aad); ok {
		t.Fatal("a whole block of padding was accepted")
	}
}

// FuzzUnframe: a stored share comes from etcd. Whatever it holds, the
// parser neither panics nor accepts what frame would not make.
func FuzzUnframe(f *testing.F) {
	f.Add(frame(mechGCM, make([]byte, ivSize+tagSize+33)))
	f.Add(frame(mechKWP, make([]byte, 64)))
	f.Add([]byte{})
	f.Add([]byte{framing.Version, byte(mechKWP)})
	f.Add([]byte{2, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, body, err := unframe(b)
		if err != nil {
			return
		}
		if !bytes.Equal(frame(m, body), b) {
			t.Fatalf("unframe(%x) = %v %x, which does not frame back", b, m, body)
		}
		if m == mechKWP && len(body)%kwpBlock != 0 || m == mechGCM && len(body) <= ivSize+tagSize {
			t.Fatalf("unframe(%x) accepted a body of %d bytes for %s", b, len(body), m)
		}
	})
}

// FuzzOpenKWP: an unwrapped value is what the token returned. The seal's
// parser neither panics nor returns a share it would not seal.
func FuzzOpenKWP(f *testing.F) {
	aad := []byte("dek=1;share=2")
	f.Add(sealKWP([]byte("share"), aad))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		share, ok := openKWP(sealed, aad)
		if ok && !bytes.Equal(sealKWP(share, aad), sealed) {
			t.Fatalf("openKWP(%x) = %x, which does not seal back", sealed, share)
		}
	})
}
