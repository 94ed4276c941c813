package kmsclients

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

var (
	checked   = Framing{Version: 1, Checksum: true}
	unchecked = Framing{Version: 1}
)

// TestFramingDecodesStoredShares: shares awskms and gcpkms framed before
// this helper still decode, and frame to the same bytes.
func TestFramingDecodesStoredShares(t *testing.T) {
	for _, tc := range []struct {
		name    string
		framing Framing
		stored  string
		body    string
	}{
		{"with checksum", checked, "016b6d732d636970686572746578742d626c6f629153928d", "kms-ciphertext-blob"},
		{"without checksum", unchecked, "01636c6f75646b6d732d63697068657274657874", "cloudkms-ciphertext"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored, _ := hex.DecodeString(tc.stored)
			body, err := tc.framing.Unframe(stored)
			if err != nil || string(body) != tc.body {
				t.Fatalf("Unframe = %q, %v; want %q", body, err, tc.body)
			}
			if got := tc.framing.Frame([]byte(tc.body)); !bytes.Equal(got, stored) {
				t.Fatalf("Frame = %x, want %x", got, stored)
			}
		})
	}
}

// TestFramingRefuses: each bad share is refused with a reason holding
// none of its bytes.
func TestFramingRefuses(t *testing.T) {
	body := []byte("SECRETISH")
	good := checked.Frame(body)
	for _, tc := range []struct {
		name    string
		framing Framing
		wrapped []byte
		want    string
	}{
		{"empty", checked, nil, "wrapped share of 0 bytes: want 6 to 4096"},
		{"no body", checked, checked.Frame(nil), "wrapped share of 5 bytes"},
		{"no body, no checksum", unchecked, []byte{1}, "wrapped share of 1 bytes: want 2 to 4096"},
		{"too long", unchecked, unchecked.Frame(make([]byte, MaxWrappedSize)), "wrapped share of 4097 bytes"},
		{"other version", checked, Framing{Version: 2, Checksum: true}.Frame(body), "format version 2, this build reads version 1"},
		{"checksum", checked, append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1), "checksum does not match"},
		{"checksum left off", checked, unchecked.Frame(body), "checksum does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.framing.Unframe(tc.wrapped)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unframe: %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("the error holds the share's bytes: %v", err)
			}
		})
	}
}

// TestFramingCatchesDamage: with a checksum, every bit flip and
// truncation is caught.
func TestFramingCatchesDamage(t *testing.T) {
	w := checked.Frame([]byte("vault:v12:Zm9vYmFy"))
	for i := range w {
		for bit := range 8 {
			bad := bytes.Clone(w)
			bad[i] ^= 1 << bit
			if _, err := checked.Unframe(bad); err == nil {
				t.Fatalf("a flip of bit %d of byte %d went unnoticed", bit, i)
			}
		}
	}
	for n := range len(w) {
		if _, err := checked.Unframe(w[:n]); err == nil {
			t.Fatalf("truncation to %d bytes went unnoticed", n)
		}
	}
}

// FuzzUnframe: stored shares are untrusted bytes; Unframe never panics,
// and what it accepts frames back to the same bytes.
func FuzzUnframe(f *testing.F) {
	f.Add(checked.Frame([]byte("blob")), true)
	f.Add(unchecked.Frame([]byte("blob")), false)
	f.Add([]byte{}, true)
	f.Add([]byte{1, 0, 0, 0, 0}, true)
	f.Fuzz(func(t *testing.T, wrapped []byte, checksum bool) {
		fr := Framing{Version: 1, Checksum: checksum}
		body, err := fr.Unframe(wrapped)
		if err != nil {
			return
		}
		if len(body) == 0 || !bytes.Equal(fr.Frame(body), wrapped) {
			t.Fatalf("Unframe(%x) = %x, which does not frame back", wrapped, body)
		}
	})
}
