package kmsplugin

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

func sampleV2() sealed {
	return sealed{
		api:         apiV2,
		keyID:       "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		ciphertext:  bytes.Repeat([]byte{0xc7}, 184),
		annotations: map[string][]byte{"version.encryption.aws.io": []byte("1"), "b.example.com": {0, 1, 2}},
	}
}

func sampleV1() sealed {
	return sealed{api: apiV1, ciphertext: []byte("v1-ciphertext-blob")}
}

func mustMarshal(t testing.TB, s sealed) []byte {
	t.Helper()
	raw, err := s.marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestFrameRoundTrip(t *testing.T) {
	for _, s := range []sealed{sampleV2(), sampleV1(), {api: apiV2, keyID: "k", ciphertext: []byte{1}}} {
		raw := mustMarshal(t, s)
		got, err := unmarshal(raw)
		if err != nil || got.api != s.api || got.keyID != s.keyID || !bytes.Equal(got.ciphertext, s.ciphertext) || len(got.annotations) != len(s.annotations) {
			t.Fatalf("round trip of %+v: %+v, %v", s, got, err)
		}
		for k, v := range s.annotations {
			if !bytes.Equal(got.annotations[k], v) {
				t.Fatalf("annotation %s: %x, want %x", k, got.annotations[k], v)
			}
		}
	}
}

// TestFrameRejectsDamage: every single-bit flip and every truncation is
// caught before a custodian is asked.
func TestFrameRejectsDamage(t *testing.T) {
	raw := mustMarshal(t, sampleV2())
	for i := range raw {
		for bit := range 8 {
			bad := bytes.Clone(raw)
			bad[i] ^= 1 << bit
			if _, err := unmarshal(bad); err == nil {
				t.Fatalf("a flip of bit %d of byte %d went unnoticed", bit, i)
			}
		}
	}
	for n := range len(raw) {
		if _, err := unmarshal(raw[:n]); err == nil {
			t.Fatalf("truncation to %d bytes went unnoticed", n)
		}
	}
}

// withCRC appends the checksum to body, to reach the parser's other checks.
func withCRC(body []byte) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
}

// TestFrameRefusesNonCanonical: with a correct checksum, anything marshal
// would not make is still refused.
func TestFrameRefusesNonCanonical(t *testing.T) {
	body := func(s sealed) []byte { raw := mustMarshal(t, s); return raw[:len(raw)-kmsclients.ChecksumSize] }
	good := body(sampleV2())
	// Swap the two annotations (b.example.com sorts first).
	s := sampleV2()
	var swapped []byte
	swapped = append(swapped, good[:2]...)
	swapped = binary.BigEndian.AppendUint16(swapped, uint16(len(s.keyID)))
	swapped = append(swapped, s.keyID...)
	swapped = binary.BigEndian.AppendUint16(swapped, uint16(len(s.ciphertext)))
	swapped = append(swapped, s.ciphertext...)
	swapped = append(swapped, 2)
	for _, k := range []string{"version.encryption.aws.io", "b.example.com"} {
		swapped = append(swapped, byte(len(k)))
		swapped = append(swapped, k...)
		swapped = binary.BigEndian.AppendUint16(swapped, uint16(len(s.annotations[k])))
		swapped = append(swapped, s.annotations[k]...)
	}
	for name, b := range map[string][]byte{
		"trailing byte":       append(bytes.Clone(good), 0),
		"unsorted":            swapped,
		"unknown version":     append([]byte{2}, good[1:]...),
		"unknown api":         append([]byte{framing.Version, 3}, good[2:]...),
		"v1 with key_id":      append([]byte{framing.Version, apiV1}, good[2:]...),
		"empty":               {},
		"empty ciphertext v1": {framing.Version, apiV1, 0, 0, 0, 0, 0},
	} {
		if _, err := unmarshal(withCRC(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	v2NoKey := body(sealed{api: apiV1, ciphertext: []byte("x")})
	v2NoKey[1] = apiV2
	if _, err := unmarshal(withCRC(v2NoKey)); err == nil {
		t.Error("v2 without key_id: accepted")
	}
}

func TestFrameLimits(t *testing.T) {
	for name, s := range map[string]sealed{
		"too big":             {api: apiV2, keyID: "k", ciphertext: make([]byte, kmsclients.MaxWrappedSize)},
		"empty ciphertext":    {api: apiV2, keyID: "k"},
		"empty key_id":        {api: apiV2, ciphertext: []byte{1}},
		"long key_id":         {api: apiV2, keyID: strings.Repeat("k", maxKeyID+1), ciphertext: []byte{1}},
		"bad UTF-8 key_id":    {api: apiV2, keyID: "\xff", ciphertext: []byte{1}},
		"empty annotation":    {api: apiV2, keyID: "k", ciphertext: []byte{1}, annotations: map[string][]byte{"": nil}},
		"long annotation key": {api: apiV2, keyID: "k", ciphertext: []byte{1}, annotations: map[string][]byte{strings.Repeat("a", 254): nil}},
		"v1 annotations":      {api: apiV1, ciphertext: []byte{1}, annotations: map[string][]byte{"a.b": nil}},
	} {
		if _, err := s.marshal(); err == nil {
			t.Errorf("%s: marshalled", name)
		}
	}
	// The largest frame that fits.
	s := sealed{api: apiV2, keyID: "k", ciphertext: make([]byte, kmsclients.MaxWrappedSize-minFrame-1)}
	raw := mustMarshal(t, s)
	if len(raw) != kmsclients.MaxWrappedSize {
		t.Fatalf("frame of %d bytes", len(raw))
	}
	if _, err := unmarshal(raw); err != nil {
		t.Fatalf("the largest frame is refused: %v", err)
	}
}

// TestStoredFormatUnchanged: shares stored by an earlier release (these
// frames were made by the backend's own code before kmsclients.Framing)
// still decode, and marshal back to the same bytes.
func TestStoredFormatUnchanged(t *testing.T) {
	for _, tc := range []struct {
		stored string
		want   sealed
	}{
		{"010200026b3100026374020d612e6578616d706c652e636f6d0001760d622e6578616d706c652e636f6d000100ae868ba3",
			sealed{api: apiV2, keyID: "k1", ciphertext: []byte("ct"), annotations: map[string][]byte{"a.example.com": []byte("v"), "b.example.com": {0}}}},
		{"0101000000047631637400a967d3c2", sealed{api: apiV1, ciphertext: []byte("v1ct")}},
	} {
		stored, _ := hex.DecodeString(tc.stored)
		got, err := unmarshal(stored)
		if err != nil || got.api != tc.want.api || got.keyID != tc.want.keyID || !bytes.Equal(got.ciphertext, tc.want.ciphertext) || len(got.annotations) != len(tc.want.annotations) {
			t.Fatalf("unmarshal(%s) = %+v, %v", tc.stored, got, err)
		}
		for k, v := range tc.want.annotations {
			if !bytes.Equal(got.annotations[k], v) {
				t.Fatalf("annotation %s: %x, want %x", k, got.annotations[k], v)
			}
		}
		if raw := mustMarshal(t, got); !bytes.Equal(raw, stored) {
			t.Fatalf("marshal = %x, want %s", raw, tc.stored)
		}
	}
}

func TestBinding(t *testing.T) {
	sh := []byte("a share of thirty-three bytes....")
	pt := bind(sh, []byte("dek=1;share=2"))
	if got, ok := unbind(pt, []byte("dek=1;share=2")); !ok || !bytes.Equal(got, sh) {
		t.Fatal("unbind of a bound share")
	}
	for _, aad := range [][]byte{[]byte("dek=1;share=3"), nil, []byte("dek=1;share=2 ")} {
		if _, ok := unbind(pt, aad); ok {
			t.Errorf("bound to %q, unbound with %q", "dek=1;share=2", aad)
		}
	}
	if _, ok := unbind(pt[:bindingSize], []byte("dek=1;share=2")); ok {
		t.Error("a binding with no share accepted")
	}
}

// FuzzUnframe: the parser of the stored share (etcd data) never panics,
// accepts only what marshal makes (one encoding per share), and what it
// accepts marshals back to the same bytes. Each input is tried as is and
// with a checksum appended, to reach past the checksum.
func FuzzUnframe(f *testing.F) {
	for _, s := range []sealed{sampleV2(), sampleV1()} {
		raw, _ := s.marshal()
		f.Add(raw)
		f.Add(raw[:len(raw)-kmsclients.ChecksumSize])
	}
	f.Add([]byte{framing.Version, apiV2, 0, 1, 'k', 0, 1, 0xaa, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, withCRC(b)} {
			s, err := unmarshal(in)
			if err != nil {
				continue
			}
			out, err := s.marshal()
			if err != nil {
				t.Fatalf("accepted %x, which does not marshal: %v", in, err)
			}
			if !bytes.Equal(out, in) {
				t.Fatalf("accepted %x, which marshals to %x", in, out)
			}
		}
	})
}
