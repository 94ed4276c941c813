package envelope

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/fips140"
	"errors"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/internal/testutil"
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
	if !fips140.Enforced() {
		bs := newLocals(f, 3)
		f.Add(mustEncrypt(f, mustNew(f, Config{Threshold: 2, Backends: bs, Recovery: newOfficers(f, 2, 3).policy(f, bs)}), seed).Header)
	}
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
		again := body
		if h.Recovery != nil {
			again = append(again, h.Recovery.Signature[:]...)
		}
		again = append(again, h.commitment[:]...)
		if !bytes.Equal(again, raw) {
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

// FuzzForgedHeader: headers built by an attacker holding b1 of a 2-of-3
// (any framing of b1's share, any k and n, others' genuine shares reused
// or not, sealed under their own DEK) never decrypt.
func FuzzForgedHeader(f *testing.F) {
	bs := newLocals(f, 3)
	e, err := New(Config{Threshold: 2, Backends: bs})
	if err != nil {
		f.Fatal(err)
	}
	if err := e.Prepare(context.Background()); err != nil {
		f.Fatal(err)
	}
	s, _ := e.Encrypt(seed)
	genuine, _ := ParseHeader(s.Header)
	f.Add(byte(2), byte(3), byte(2), byte(1), byte(0), true, bytes.Repeat([]byte{7}, 32))
	f.Add(byte(1), byte(1), byte(1), byte(1), byte(1), false, bytes.Repeat([]byte{9}, 32))
	f.Add(byte(2), byte(3), byte(2), byte(1), byte(2), true, bytes.Repeat([]byte{1}, 32))
	f.Fuzz(func(t *testing.T, k, n, shareK, index, x byte, reuse bool, value []byte) {
		if n < 1 || n > 3 || k < 1 || k > n || len(value) == 0 || len(value) > 64 {
			return
		}
		// What a share at x = 0 would make the DEK.
		dek := bytes.Repeat([]byte{0x5a}, dekSize)
		if len(value) == dekSize {
			dek = value
		}
		h := &Header{Threshold: int(k), Generation: genuine.Generation, Created: genuine.Created, DEKID: genuine.DEKID}
		framed := append([]byte{2, shareK, index}, value...)
		framed = append(framed, x)
		h.Shares = []WrappedShare{wrapFor(t, bs[0], h, 1, int(n), framed)}
		for i := 2; i <= int(n); i++ {
			if reuse {
				h.Shares = append(h.Shares, genuine.Shares[i-1])
			} else {
				h.Shares = append(h.Shares, WrappedShare{Index: i, Backend: bs[i-1].Name(), KeyIdentity: "local:x", Wrapped: []byte{byte(i)}})
			}
		}
		raw, err := h.seal(dek, nil)
		if err != nil {
			return
		}
		d, _ := newDEK(dek, raw, h)
		ct, _ := d.seal(seed)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Cold: e's cache would refuse it without combining.
		if _, err := coldNode(t, e).Decrypt(ctx, ct, raw); err == nil {
			t.Fatalf("a header forged with one backend of a 2-of-3 decrypted: k=%d n=%d share k=%d index=%d x=%d", k, n, shareK, index, x)
		}
	})
}

// FuzzOfficerDecrypt: recovery through the officers, given any header and
// ciphertext, opens only the genuine pair, and never panics on a header
// that claims an officers' branch.
func FuzzOfficerDecrypt(f *testing.F) {
	testutil.NeedsAge(f)
	o, rec, s := sealedWithOfficers(f)
	f.Add(s.Ciphertext, s.Header)
	f.Add([]byte{2}, []byte("TRSH\x02"))
	k, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: o.ids, Trusted: []ed25519.PublicKey{rec.SigningKey.Public}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ct, hdr []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pt, err := k.Decrypt(ctx, ct, hdr)
		if err == nil && (!bytes.Equal(ct, s.Ciphertext) || !bytes.Equal(hdr, s.Header) || !bytes.Equal(pt, seed)) {
			t.Fatalf("forged input decrypted through the officers: ct=%x hdr=%x", ct, hdr)
		}
	})
}

// FuzzOpenTransferred: a file key sealed to the operator opens an
// officer's share sealed in the header only if it is that share's own
// key, and then gives that share: never one of the sender's choosing, nor
// the share of another place (the last officer's is hybrid ML-KEM).
func FuzzOpenTransferred(f *testing.F) {
	testutil.NeedsAge(f)
	o, _, s := sealedWithOfficers(f)
	h, err := ParseHeader(s.Header)
	if err != nil {
		f.Fatal(err)
	}
	var keys, shares [3][]byte
	for i := range 3 {
		if keys[i], err = shareFileKey(h, i+1, o.ids); err != nil {
			f.Fatal(err)
		}
		if shares[i], err = OpenOfficerShare(h, i+1, h.Recovery.Shares[i].Sealed, o.ids); err != nil {
			f.Fatal(err)
		}
		f.Add(keys[i], uint8(i))
		f.Add(keys[i], uint8(i+1)) // at another place
	}
	f.Add(make([]byte, fileKeySize), uint8(0))
	operator, _ := age.GenerateX25519Identity()
	f.Fuzz(func(t *testing.T, key []byte, place uint8) {
		i := int(place) % 3
		sealed, err := ageSeal(key, operator.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		framed, err := openTransferred(h, i+1, sealed, []age.Identity{operator})
		if (err == nil) != bytes.Equal(key, keys[i]) {
			t.Fatalf("key %x at share %d: %v", key, i+1, err)
		}
		if err == nil && !bytes.Equal(framed, shares[i]) {
			t.Fatalf("share %d's key opened another share", i+1)
		}
	})
}

// FuzzParseSigningKey: a signing key file is parsed or refused, never
// half-read.
func FuzzParseSigningKey(f *testing.F) {
	testutil.NeedsAge(f)
	bs := newLocals(f, 3)
	b, err := MarshalSigningKey(newOfficers(f, 1, 1).policy(f, bs).SigningKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseSigningKey("f", b)
		if err != nil {
			return
		}
		if len(k.Public) != ed25519.PublicKeySize {
			t.Fatalf("public key of %d bytes accepted", len(k.Public))
		}
		if _, err := ParseHeader(k.Wrapped); err != nil {
			t.Fatalf("unparsable wrapped key accepted: %v", err)
		}
	})
}
