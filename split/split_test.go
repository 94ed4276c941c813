package split

import (
	"bytes"
	"crypto/rand"
	"testing"
)

func secret(t testing.TB) []byte {
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// subsets calls f with every subset of {0..n-1} of size size.
func subsets(n, size int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == size {
			f(append([]int(nil), cur...))
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestEverySubsetOfSizeKRecovers(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{1, 1}, {1, 3}, {2, 2}, {2, 3}, {3, 5}, {4, 7}, {16, 16}} {
		sec := secret(t)
		shares, err := Split(sec, tc.k, tc.n)
		if err != nil {
			t.Fatalf("Split(%d of %d): %v", tc.k, tc.n, err)
		}
		subsets(tc.n, tc.k, func(idx []int) {
			pick := make([]Share, 0, len(idx))
			for _, i := range idx {
				// Go through the framing, as shares do in real use.
				s, err := Parse(shares[i].Marshal(), len(sec))
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				pick = append(pick, s)
			}
			got, err := Combine(pick)
			if err != nil {
				t.Fatalf("%d of %d, subset %v: %v", tc.k, tc.n, idx, err)
			}
			if !bytes.Equal(got, sec) {
				t.Fatalf("%d of %d, subset %v: wrong secret", tc.k, tc.n, idx)
			}
		})
	}
}

func TestFewerThanKSharesDoNotRecover(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{2, 3}, {3, 5}, {4, 6}} {
		sec := secret(t)
		shares, err := Split(sec, tc.k, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		subsets(tc.n, tc.k-1, func(idx []int) {
			pick := make([]Share, 0, len(idx))
			for _, i := range idx {
				pick = append(pick, shares[i])
			}
			if got, err := Combine(pick); err == nil {
				t.Fatalf("%d of %d: combining %d shares should fail, got %x", tc.k, tc.n, len(idx), got)
			}
			// Even forcing the interpolation with a wrong threshold must not give the secret.
			if len(pick) >= 2 {
				forced := make([]Share, len(pick))
				for i, s := range pick {
					forced[i] = s
					forced[i].Threshold = len(pick)
				}
				if got, err := Combine(forced); err == nil && bytes.Equal(got, sec) {
					t.Fatalf("%d of %d: %d shares gave the secret", tc.k, tc.n, len(pick))
				}
			}
		})
	}
}

func TestThresholdRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		k, n int
	}{{"zero backends", 1, 0}, {"zero threshold", 0, 3}, {"k above n", 4, 3}, {"too many", 2, 17}, {"negative", -1, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Split(secret(t), tc.k, tc.n); err == nil {
				t.Fatalf("Split(%d of %d) should fail", tc.k, tc.n)
			}
		})
	}
}

func TestCombineRejectsMixedOrDuplicateShares(t *testing.T) {
	sec := secret(t)
	a, _ := Split(sec, 2, 3)
	b, _ := Split(sec, 3, 3)
	if _, err := Combine([]Share{a[0], a[0]}); err == nil {
		t.Error("duplicate share accepted")
	}
	if _, err := Combine([]Share{a[0], b[1]}); err == nil {
		t.Error("shares of different thresholds accepted")
	}
	if _, err := Combine(nil); err == nil {
		t.Error("no shares accepted")
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	good := func() []byte { s, _ := Split(secret(t), 2, 3); return s[0].Marshal() }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", []byte{1, 2}},
		{"version", append([]byte{9}, good()[1:]...)},
		{"first format", append([]byte{1}, good()[1:]...)},
		{"threshold zero", append([]byte{frameVersion, 0}, good()[2:]...)},
		{"index zero", append([]byte{frameVersion, 2, 0}, good()[3:]...)},
		{"index too big", append([]byte{frameVersion, 2, 17}, good()[3:]...)},
		{"index not x", append([]byte{frameVersion, 2, 2}, good()[3:]...)},
		{"x zero", append(good()[:len(good())-1], 0)},
		{"truncated", good()[:20]},
		{"long", append(good(), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.b, 32); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	s, _ := Split(make([]byte, 32), 2, 3)
	f.Add(s[0].Marshal())
	one, _ := Split(make([]byte, 32), 1, 2)
	f.Add(one[1].Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		sh, err := Parse(b, 32)
		if err != nil {
			return
		}
		if !bytes.Equal(sh.Marshal(), b) {
			t.Fatalf("parse/marshal not a round trip")
		}
		if sh.Threshold > 1 && int(b[len(b)-1]) != sh.Index {
			t.Fatalf("accepted share %d with x-coordinate %d", sh.Index, b[len(b)-1])
		}
	})
}

func TestShareXIsItsIndex(t *testing.T) {
	shares, err := Split(secret(t), 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shares {
		if x := s.value[len(s.value)-1]; int(x) != s.Index {
			t.Errorf("share %d has x-coordinate %d", s.Index, x)
		}
	}
}

// An attacker who controls one share must not be able to choose the
// secret. With x = 0 the other shares' Lagrange weights vanish and the
// result would be the attacker's bytes; with x set to another share's
// index the interpolation would run over a repeated point.
func TestCombineRefusesAForgedX(t *testing.T) {
	sec := secret(t)
	shares, _ := Split(sec, 2, 3)
	chosen := bytes.Repeat([]byte{0x41}, 32)
	for _, tc := range []struct {
		name string
		x    byte
	}{{"x zero", 0}, {"x of another share", 2}, {"x beyond n", 9}} {
		t.Run(tc.name, func(t *testing.T) {
			forged := Share{Index: 1, Threshold: 2, value: append(bytes.Clone(chosen), tc.x)}
			got, err := Combine([]Share{forged, shares[1]})
			if err == nil {
				t.Fatalf("combined a share with x=%d (secret chosen: %v)", tc.x, bytes.Equal(got, chosen))
			}
			if _, err := Parse(forged.Marshal(), 32); err == nil {
				t.Fatalf("parsed a share with x=%d", tc.x)
			}
		})
	}
}

// gfMul must agree with multiplication in the field vault/shamir
// interpolates in, or Combine would not invert Split: check it against a
// slow carry-less multiply reduced by 0x11b.
func TestGFMulMatchesTheAESField(t *testing.T) {
	slow := func(a, b byte) byte {
		var p uint16
		for i := 0; i < 8; i++ {
			if b>>i&1 == 1 {
				p ^= uint16(a) << i
			}
		}
		for i := 15; i >= 8; i-- {
			if p>>i&1 == 1 {
				p ^= 0x11b << (i - 8)
			}
		}
		return byte(p)
	}
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			if got, want := gfMul(byte(a), byte(b)), slow(byte(a), byte(b)); got != want {
				t.Fatalf("gfMul(%#x, %#x) = %#x, want %#x", a, b, got, want)
			}
		}
	}
}
