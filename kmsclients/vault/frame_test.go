package vault

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
)

const sampleCiphertext = "vault:v12:Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="

func TestFrameRoundTrip(t *testing.T) {
	for _, binding := range []byte{bindAssociatedData, bindInPlaintext} {
		b, ct, v, err := unframe(frame(binding, sampleCiphertext))
		if err != nil || b != binding || ct != sampleCiphertext || v != 12 {
			t.Fatalf("unframe(frame(%d)) = %d, %q, %d, %v", binding, b, ct, v, err)
		}
	}
}

// TestFrameRejectsDamage: every single-bit flip and every truncation of a
// stored share is caught before Vault is asked.
func TestFrameRejectsDamage(t *testing.T) {
	w := frame(bindAssociatedData, sampleCiphertext)
	for i := range w {
		for bit := range 8 {
			bad := bytes.Clone(w)
			bad[i] ^= 1 << bit
			if _, _, _, err := unframe(bad); err == nil {
				t.Fatalf("a flip of bit %d of byte %d went unnoticed", bit, i)
			}
		}
	}
	for n := range len(w) {
		if _, _, _, err := unframe(w[:n]); err == nil {
			t.Fatalf("truncation to %d bytes went unnoticed", n)
		}
	}
}

func TestFrameRefusesUnknownBinding(t *testing.T) {
	if _, _, _, err := unframe(frame(7, sampleCiphertext)); err == nil || !strings.Contains(err.Error(), "unknown binding 7") {
		t.Fatalf("unframe of an unknown binding: %v", err)
	}
	if _, _, _, err := unframe(frame(bindInPlaintext, "not a transit ciphertext")); err == nil || !strings.Contains(err.Error(), "not hold a transit ciphertext") {
		t.Fatalf("unframe of a ciphertext without a version: %v", err)
	}
}

// TestStoredFormatUnchanged: shares stored by an earlier release (these
// frames were made by the backend's own code before kmsclients.Framing)
// still decode, and Wrap still stores the same bytes.
func TestStoredFormatUnchanged(t *testing.T) {
	for _, tc := range []struct {
		stored     string
		binding    byte
		ciphertext string
		version    uint64
	}{
		{"01017661756c743a76333a51554a4459432947", bindAssociatedData, "vault:v3:QUJD", 3},
		{"01027661756c743a7631323a52455647a63b1161", bindInPlaintext, "vault:v12:REVG", 12},
	} {
		stored, _ := hex.DecodeString(tc.stored)
		binding, ct, version, err := unframe(stored)
		if err != nil || binding != tc.binding || ct != tc.ciphertext || version != tc.version {
			t.Fatalf("unframe(%s) = %d, %q, %d, %v", tc.stored, binding, ct, version, err)
		}
		if got := frame(binding, ct); !bytes.Equal(got, stored) {
			t.Fatalf("frame = %x, want %s", got, tc.stored)
		}
	}
}

func TestCiphertextVersion(t *testing.T) {
	for ct, want := range map[string]uint64{
		"vault:v1:abc":         1,
		"vault:v4294967295:ab": 4294967295,
		"vault:v0:abc":         0,
		"vault:v01:abc":        0,
		"vault:v-1:abc":        0,
		"vault:v+1:abc":        0,
		"vault:v1:":            0,
		"vault:v1:a:b":         0,
		"vault:v4294967296:ab": 0,
		"vault:vx:abc":         0,
		"vault:1:abc":          0,
		"":                     0,
	} {
		got, ok := ciphertextVersion(ct)
		if ok != (want != 0) || got != want {
			t.Errorf("ciphertextVersion(%q) = %d, %v; want %d", ct, got, ok, want)
		}
	}
}

func TestParseIdentity(t *testing.T) {
	for id, want := range map[string]struct {
		path    string
		version uint64
	}{
		"vault:https://vault.example.com:8200/transit/k:v3":     {"transit/k", 3},
		"vault:http://127.0.0.1:8200/ns/a/transit/key.v2:v10":   {"ns/a/transit/key.v2", 10},
		"vault:https://v/transit/k:v1:v2":                       {"transit/k:v1", 2},
		"vault:https://v/transit/k":                             {},
		"vault:https://v/transit/k:v0":                          {},
		"vault:ftp://v/transit/k:v1":                            {},
		"vault:https://v:v1":                                    {},
		"local:abc":                                             {},
		"arn:aws:kms:eu-west-2:111122223333:key/1234:v1":        {},
		"vault:https://vault.example.com:8200/transit/k:v3\x00": {},
	} {
		path, version, ok := parseIdentity(id)
		if ok != (want.version != 0) || path != want.path && ok || version != want.version {
			t.Errorf("parseIdentity(%q) = %q, %d, %v; want %q, %d", id, path, version, ok, want.path, want.version)
		}
	}
}

func TestAADBinding(t *testing.T) {
	a, b := aadBinding([]byte("dek=1;share=1")), aadBinding([]byte("dek=1;share=2"))
	if len(a) != bindingSize || bytes.Equal(a, b) {
		t.Fatal("bindings of different associated data are equal, or of the wrong size")
	}
}

// FuzzUnframe: stored shares are untrusted bytes; unframe must not panic,
// and what it accepts must frame back to the same bytes.
func FuzzUnframe(f *testing.F) {
	f.Add(frame(bindAssociatedData, sampleCiphertext))
	f.Add(frame(bindInPlaintext, "vault:v1:AAAA"))
	f.Add([]byte{framing.Version})
	f.Fuzz(func(t *testing.T, wrapped []byte) {
		binding, ct, version, err := unframe(wrapped)
		if err != nil {
			return
		}
		if !bytes.Equal(frame(binding, ct), wrapped) {
			t.Fatal("unframe accepted bytes that do not frame back")
		}
		if got, _ := ciphertextVersion(ct); got != version || version == 0 {
			t.Fatalf("version %d, ciphertext says %d", version, got)
		}
	})
}

// FuzzParseIdentity: key identities come from stored envelopes too.
func FuzzParseIdentity(f *testing.F) {
	f.Add("vault:https://vault.example.com:8200/transit/k:v3")
	f.Add("vault:http://127.0.0.1/ns/transit/k:v12")
	f.Fuzz(func(t *testing.T, id string) {
		path, version, ok := parseIdentity(id)
		if !ok {
			return
		}
		if version == 0 || path == "" {
			t.Fatalf("accepted %q as path %q version %d", id, path, version)
		}
		suffix := "/" + path + ":v" + strconv.FormatUint(version, 10)
		if len(id) < len(suffix) || id[len(id)-len(suffix):] != suffix {
			t.Fatalf("%q does not end with what was parsed (%q)", id, suffix)
		}
	})
}
