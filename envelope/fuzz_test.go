package envelope

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// Fuzz targets for every parser of untrusted bytes. Seed corpora live in
// testdata/fuzz/<target>; f.Add seeds a real header and ciphertext too.

func fuzzEnvelope(f *testing.F) (*Envelope, Sealed) {
	e, err := New(Config{Threshold: 2, Backends: newLocals(f, 3)})
	if err != nil {
		f.Fatal(err)
	}
	if err := e.Prepare(context.Background()); err != nil {
		f.Fatal(err)
	}
	s, err := e.Encrypt(seed)
	if err != nil {
		f.Fatal(err)
	}
	return e, s
}

func FuzzParseHeader(f *testing.F) {
	_, s := fuzzEnvelope(f)
	f.Add(s.Header)
	f.Add([]byte("TRSH"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := ParseHeader(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parse error not of kind ErrInvalid: %v", err)
			}
			return
		}
		// A parsed header re-encodes to the same bytes: nothing is
		// silently dropped or reinterpreted.
		body, err := h.marshalBody()
		if err != nil {
			t.Fatalf("parsed header does not re-encode: %v", err)
		}
		if !bytes.Equal(append(body, h.commitment[:]...), raw) {
			t.Fatal("parse/encode is not a round trip")
		}
		_ = h.KeyID()
	})
}

func FuzzDecrypt(f *testing.F) {
	e, s := fuzzEnvelope(f)
	f.Add(s.Ciphertext, s.Header)
	f.Add([]byte{1}, []byte{})
	f.Fuzz(func(t *testing.T, ct, hdr []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pt, err := e.Decrypt(ctx, ct, hdr)
		if err != nil {
			return
		}
		// Only the genuine pair may decrypt (GCM and the commitment
		// make forgeries infeasible), and only to the genuine plaintext.
		if !bytes.Equal(ct, s.Ciphertext) || !bytes.Equal(hdr, s.Header) || !bytes.Equal(pt, seed) {
			t.Fatalf("forged input decrypted: ct=%x hdr=%x", ct, hdr)
		}
	})
}

func FuzzParseCombined(f *testing.F) {
	_, s := fuzzEnvelope(f)
	f.Add(MarshalCombined(s.Header, s.Ciphertext))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ct, err := ParseCombined(b)
		if err != nil {
			return
		}
		if !bytes.Equal(MarshalCombined(h, ct), b) {
			t.Fatal("parse/marshal is not a round trip")
		}
	})
}
