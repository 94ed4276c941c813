package pkcs11

import (
	"bytes"
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
		m, body, ok := unframe(frame(c.m, c.body))
		if !ok || m != c.m || !bytes.Equal(body, c.body) {
			t.Fatalf("%s: round trip gave %v %x %v", c.m, m, body, ok)
		}
	}
}

func TestUnframeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version only", []byte{formatVersion}},
		{"other version", frame(mechGCM, make([]byte, 40))[:0:0]},
		{"version 2", append([]byte{2, byte(mechGCM)}, make([]byte, 40)...)},
		{"unknown mechanism", append([]byte{formatVersion, 3}, make([]byte, 40)...)},
		{"gcm without ciphertext", frame(mechGCM, make([]byte, ivSize+tagSize))},
		{"kwp too short", frame(mechKWP, make([]byte, 24))},
		{"kwp not a multiple of 8", frame(mechKWP, make([]byte, 33))},
		{"too long", frame(mechKWP, make([]byte, kmsclients.MaxWrappedSize))},
	} {
		if _, _, ok := unframe(tc.b); ok {
			t.Errorf("%s: accepted", tc.name)
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
	f.Add([]byte{formatVersion, byte(mechKWP)})
	f.Add([]byte{2, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, body, ok := unframe(b)
		if !ok {
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
