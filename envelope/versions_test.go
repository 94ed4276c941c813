package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// goldenDEK opens the golden ciphertexts below: a fixed key and header
// stand in for a DEK unwrapped from its backends.
func goldenDEK(t *testing.T) *dek {
	t.Helper()
	d, err := newDEK(bytes.Repeat([]byte{0x42}, dekSize), []byte("golden header"), &Header{Threshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const goldenPlaintext = "golden plaintext, 32 bytes long!"

// Ciphertexts of goldenPlaintext under goldenDEK as stored in etcd: by
// the first builds (1), by the builds before FIPS mode (2, checked
// against such a build) and by this one (3). Each must open in every
// build, FIPS-only mode included: decryption with any nonce is an
// approved service of the module. A label or layout changed by mistake
// fails here.
var goldenCiphertexts = []struct{ version, hex string }{
	{"1", "01070707070707070707070707f174868786b56209ebdbf8a3cebc5896fb3702b3af4b5095578e8d0e1e97536959e2590ff2adecaa26f74981cf7c1dfd"},
	{"2", "025a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0ad5dc3fc6c404040239fca1aff4fd1b690f4de5df5d32e2d9df6e4726e61da7c532b39d344b17320b58df13ac257555"},
	{"3", "03ff903bb468099c41067b426c65343d8c581eb5575087768940b6b759fb9f99fbe7b51184409c1a02f25928375404229e6fb533e37e367cb359c5c2ff9c3b1ecf6db2753f6d0f37dc6d56d75876061263af82624c"},
}

func TestEveryCiphertextVersionOpens(t *testing.T) {
	d := goldenDEK(t)
	for _, g := range goldenCiphertexts {
		t.Run("version "+g.version, func(t *testing.T) {
			ct, _ := hex.DecodeString(g.hex)
			if err := checkCiphertext(ct); err != nil {
				t.Fatal(err)
			}
			pt, err := d.open(ct)
			if err != nil || string(pt) != goldenPlaintext {
				t.Fatalf("open: %q, %v", pt, err)
			}
			for _, i := range []int{0, 1, len(ct) - 1} {
				bad := bytes.Clone(ct)
				bad[i] ^= 1
				err := checkCiphertext(bad)
				if err == nil {
					_, err = d.open(bad)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("byte %d flipped: %v, want ErrInvalid", i, err)
				}
			}
		})
	}
}

// Encrypt writes version 3 in FIPS 140-3 mode, else 2; salt and nonce are
// fresh for every message.
func TestEncryptWritesTheVersionOfItsMode(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	a, b := mustEncrypt(t, e, seed), mustEncrypt(t, e, seed)
	want, size := byte(ciphertextVersion2), 1+saltSize+len(seed)+tagSize
	if fips140.Enabled() {
		want, size = ciphertextVersion, 1+saltSize+nonceSize+len(seed)+tagSize
	}
	if a.Ciphertext[0] != want || len(a.Ciphertext) != size {
		t.Fatalf("Encrypt wrote version %d in %d bytes, want %d in %d", a.Ciphertext[0], len(a.Ciphertext), want, size)
	}
	if bytes.Equal(a.Ciphertext[1:size-tagSize-len(seed)], b.Ciphertext[1:size-tagSize-len(seed)]) {
		t.Fatal("two messages share a salt or a nonce")
	}
	if got, err := e.Decrypt(ctxT(t), a.Ciphertext, a.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("Decrypt: %v", err)
	}
}

// Version 3, as a FIPS-mode plugin writes it, opens in every mode.
func TestVersion3OpensInEveryMode(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	s := mustEncrypt(t, e, seed)
	d, err := e.dekFor(ctxT(t), s.Header)
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, 1+saltSize, ciphertextOverhead+len(seed))
	ct[0] = ciphertextVersion
	rand.Read(ct[1:])
	aead, err := d.messageAEAD(infoMessage, ct[1:])
	if err != nil {
		t.Fatal(err)
	}
	ct = aead.Seal(ct, nil, seed, dataAAD(d.headerHash))
	if got, err := e.Decrypt(ctxT(t), ct, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("version 3: %v", err)
	}
}

func TestUnknownCiphertextVersionIsNamed(t *testing.T) {
	ct := append([]byte{4}, make([]byte, 60)...)
	err := checkCiphertext(ct)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unknown ciphertext version 4") {
		t.Fatalf("got %v", err)
	}
}

// sealLegacy writes version 1 or 2 as earlier builds did; FIPS-only
// enforcement is lifted for version 2's zero nonce, when writing only.
func sealLegacy(t testing.TB, d *dek, version byte, pt []byte) []byte {
	t.Helper()
	aad := dataAAD(d.headerHash)
	if version == ciphertextVersion1 {
		return d.aead.Seal([]byte{version}, nil, pt, aad)
	}
	salt := bytes.Repeat([]byte{0x5a}, saltSize)
	key, err := hkdf.Key(sha256.New, d.dataRoot, salt, infoMessage2, 32)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte{version}, salt...)
	fips140.WithoutEnforcement(func() {
		block, _ := aes.NewCipher(key)
		aead, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		out = aead.Seal(out, make([]byte, nonceSize), pt, aad)
	})
	return out
}
