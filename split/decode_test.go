package split

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand/v2"
	"slices"
	"testing"
)

// oracle stands in for a header's commitment: it fits one secret and
// counts how often it was asked.
type oracle struct {
	want  []byte
	calls int
}

func (o *oracle) fits(s []byte) bool { o.calls++; return bytes.Equal(s, o.want) }

func splitFor(t testing.TB, k, n int) ([]byte, []Share) {
	sec := secret(t)
	shares, err := Split(sec, k, n)
	if err != nil {
		t.Fatal(err)
	}
	return sec, shares
}

// lie replaces share i's bytes (not its x) with noise.
func lie(s Share, rng *mrand.Rand) Share {
	v := bytes.Clone(s.value)
	for b := range len(v) - 1 {
		v[b] ^= byte(rng.IntN(255) + 1)
	}
	if s.Threshold == 1 {
		v[len(v)-1] ^= 1
	}
	return Share{Index: s.Index, Threshold: s.Threshold, value: v}
}

func indexesOf(shares []Share) []int {
	var out []int
	for _, s := range shares {
		out = append(out, s.Index)
	}
	return out
}

func TestDecodeAgreesWithCombineOnEveryKSubset(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{1, 3}, {2, 3}, {3, 5}, {5, 9}} {
		sec, shares := splitFor(t, tc.k, tc.n)
		subsets(tc.n, tc.k, func(idx []int) {
			var pick []Share
			for _, i := range idx {
				pick = append(pick, shares[i])
			}
			o := &oracle{want: sec}
			got, err := Decode(context.Background(), pick, o.fits)
			if err != nil || !bytes.Equal(got.Secret, sec) {
				t.Fatalf("%d of %d, subset %v: %v", tc.k, tc.n, idx, err)
			}
			combined, _ := Combine(pick)
			if !bytes.Equal(combined, got.Secret) {
				t.Fatalf("%d of %d: Decode and Combine differ", tc.k, tc.n)
			}
		})
	}
}

// Honest shares: one polynomial, one question asked, every share fits.
func TestDecodeHonestSharesAskOnce(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{1, 1}, {1, 4}, {2, 3}, {5, 9}, {8, 16}, {16, 16}} {
		sec, shares := splitFor(t, tc.k, tc.n)
		o := &oracle{want: sec}
		got, err := Decode(context.Background(), shares, o.fits)
		if err != nil || !bytes.Equal(got.Secret, sec) {
			t.Fatalf("%d of %d: no secret (%v)", tc.k, tc.n, err)
		}
		if o.calls != 1 || !slices.Equal(got.Fit, indexesOf(shares)) {
			t.Errorf("%d of %d: %d calls, fit %v", tc.k, tc.n, o.calls, got.Fit)
		}
	}
}

// A tampered commitment with honest shares: every share is on one
// polynomial, so the commitment is asked about one secret, once, and the
// shares are reported as agreeing (the header is the fake).
func TestDecodeTamperedCommitmentCostsOneQuestion(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{1, 3}, {2, 3}, {5, 9}, {8, 16}} {
		_, shares := splitFor(t, tc.k, tc.n)
		o := &oracle{want: make([]byte, 32)}
		got, err := Decode(context.Background(), shares, o.fits)
		if err != nil || got.Secret != nil {
			t.Fatalf("%d of %d: %v, secret %v", tc.k, tc.n, err, got.Secret != nil)
		}
		if o.calls != 1 {
			t.Errorf("%d of %d: asked %d times, want once", tc.k, tc.n, o.calls)
		}
		if !slices.Equal(got.Agree, indexesOf(shares)) {
			t.Errorf("%d of %d: agree %v, want every share", tc.k, tc.n, got.Agree)
		}
	}
}

// Liars anywhere, as long as k honest shares came back: the secret is
// found, and exactly the liars are left out of Fit.
func TestDecodeRoutesAroundLiarsAndNamesThem(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	for _, tc := range []struct{ k, n, liars int }{{2, 3, 1}, {3, 5, 2}, {5, 9, 4}, {8, 16, 1}, {8, 16, 4}, {8, 16, 7}, {4, 7, 3}} {
		for round := range 5 {
			sec, shares := splitFor(t, tc.k, tc.n)
			liars := rng.Perm(tc.n)[:tc.liars]
			for _, i := range liars {
				shares[i] = lie(shares[i], rng)
			}
			rng.Shuffle(len(shares), func(i, j int) { shares[i], shares[j] = shares[j], shares[i] })
			o := &oracle{want: sec}
			got, err := Decode(context.Background(), shares, o.fits)
			if err != nil || !bytes.Equal(got.Secret, sec) {
				t.Fatalf("%d of %d with %d liars, round %d: no secret (%v)", tc.k, tc.n, tc.liars, round, err)
			}
			var honest []int
			for i, s := range shares {
				_ = i
				if !slices.ContainsFunc(liars, func(l int) bool { return l+1 == s.Index }) {
					honest = append(honest, s.Index)
				}
			}
			if !slices.Equal(got.Fit, honest) {
				t.Fatalf("%d of %d: fit %v, want the honest %v", tc.k, tc.n, got.Fit, honest)
			}
		}
	}
}

// Two liars who agree with each other and with k-1 honest shares make a
// polynomial through k+1 shares: it is asked about and refused by the
// commitment, and the true one is still found.
func TestDecodeCollidingLiarsDoNotHideTheSecret(t *testing.T) {
	sec, shares := splitFor(t, 3, 7)
	fake, _ := Split(secret(t), 3, 7)
	// The fake polynomial through honest shares 1 and 2 and a chosen
	// third point: liars 3 and 4 both on it.
	d, _ := newDecoder([]Share{shares[0], shares[1], fake[2]})
	for _, i := range []int{2, 3} {
		y := d.interpolate(0b111, byte(i+1))
		shares[i] = Share{Index: i + 1, Threshold: 3, value: append(y, byte(i+1))}
	}
	o := &oracle{want: sec}
	got, err := Decode(context.Background(), shares, o.fits)
	if err != nil || !bytes.Equal(got.Secret, sec) {
		t.Fatalf("no secret: %v", err)
	}
	if !slices.Equal(got.Fit, []int{1, 2, 5, 6, 7}) || o.calls != 2 {
		t.Errorf("fit %v after %d calls", got.Fit, o.calls)
	}
}

// k-1 liars and exactly k honest shares: only the commitment tells the
// right k-subset apart, and the search gives up after maxLoneTries
// candidates; with one more honest share it is found at once.
func TestDecodeBoundsTheSearchForExactlyKHonestShares(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(7, 8))
	sec, shares := splitFor(t, 8, 16)
	for i := range 7 {
		shares[i] = lie(shares[i], rng)
	}
	o := &oracle{want: sec}
	got, err := Decode(context.Background(), shares[:15], o.fits)
	if err != nil || o.calls > maxLoneTries {
		t.Fatalf("%v after %d calls, want at most %d", err, o.calls, maxLoneTries)
	}
	if got.Secret != nil {
		t.Logf("found within the bound (%d calls)", o.calls)
	}
	o = &oracle{want: sec}
	if got, err := Decode(context.Background(), shares, o.fits); err != nil || !bytes.Equal(got.Secret, sec) || o.calls != 1 {
		t.Fatalf("with 9 honest of 16: %v after %d calls", err, o.calls)
	}
}

func TestDecodeTooFewShares(t *testing.T) {
	sec, shares := splitFor(t, 3, 5)
	o := &oracle{want: sec}
	got, err := Decode(context.Background(), shares[:2], o.fits)
	if err != nil || got.Secret != nil || o.calls != 0 {
		t.Fatalf("got %v, %v after %d calls", got, err, o.calls)
	}
}

func TestDecodeRefusesMixedShares(t *testing.T) {
	_, a := splitFor(t, 2, 3)
	_, b := splitFor(t, 3, 3)
	for name, pick := range map[string][]Share{
		"mixed thresholds": {a[0], b[1]},
		"repeated index":   {a[0], a[0]},
		"forged x":         {{Index: 1, Threshold: 2, value: append(make([]byte, 32), 0)}, a[1]},
	} {
		if _, err := Decode(context.Background(), pick, func([]byte) bool { return true }); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// A cancelled context stops a long search: k-1 liars at 8 of 15 leave a
// secret that only the slow path finds.
func TestDecodeHonoursTheContext(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	sec, shares := splitFor(t, 8, 15)
	for i := range 7 {
		shares[i] = lie(shares[i], rng)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o := &oracle{want: sec}
	if _, err := Decode(ctx, shares, o.fits); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPublicArithmeticMatchesGFMul(t *testing.T) {
	for a := range 256 {
		for b := 1; b < 256; b++ {
			if got, want := pubMul(byte(a), byte(b)), gfMul(byte(a), byte(b)); got != want {
				t.Fatalf("pubMul(%d, %d) = %d, want %d", a, b, got, want)
			}
			if q := pubDiv(byte(a), byte(b)); gfMul(q, byte(b)) != byte(a) {
				t.Fatalf("pubDiv(%d, %d) = %d does not invert", a, b, q)
			}
		}
	}
}

// FuzzDecode: any share bytes, any commitment; Decode never panics, and a
// secret it returns is one the commitment accepted, with its Fit shares
// all on the secret's polynomial.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(2), uint8(3), []byte("seed"), uint8(0))
	f.Add(uint8(8), uint8(16), bytes.Repeat([]byte{7}, 40), uint8(3))
	f.Fuzz(func(t *testing.T, k, n uint8, noise []byte, fitAt uint8) {
		kk, nn := int(k%16)+1, int(n%16)+1
		if kk > nn {
			kk, nn = nn, kk
		}
		sec := bytes.Repeat([]byte{1}, 32)
		shares, err := Split(sec, kk, nn)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range noise {
			s := shares[i%nn]
			s.value[int(b)%(len(s.value)-min(1, kk-1))] ^= byte(i + 1)
		}
		var asked [][]byte
		fits := func(s []byte) bool {
			asked = append(asked, bytes.Clone(s))
			return len(asked) == int(fitAt%4)+1
		}
		got, err := Decode(context.Background(), shares, fits)
		if err != nil {
			t.Fatal(err)
		}
		if got.Secret == nil {
			return
		}
		if !bytes.Equal(got.Secret, asked[len(asked)-1]) || len(got.Fit) < kk {
			t.Fatalf("returned a secret the oracle did not accept, or fit %v", got.Fit)
		}
		var fit []Share
		for _, s := range shares {
			if slices.Contains(got.Fit, s.Index) {
				fit = append(fit, s)
			}
		}
		for _, s := range fit[kk-1:] {
			combined, err := Combine(append(slices.Clone(fit[:kk-1]), s))
			if err != nil || !bytes.Equal(combined, got.Secret) {
				t.Fatalf("share %d in Fit is not on the secret's polynomial", s.Index)
			}
		}
	})
}

// BenchmarkDecode: the cost of finding (or failing to find) the secret
// among 16 shares at 8 of 16, against one Combine of k honest shares.
func BenchmarkDecode(b *testing.B) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	sec, shares := splitFor(b, 8, 16)
	forged := func([]byte) bool { return false }
	liar := slices.Clone(shares)
	liar[0] = lie(liar[0], rng)
	b.Run("combine-baseline", func(b *testing.B) {
		for b.Loop() {
			Combine(shares[:8])
		}
	})
	b.Run("honest", func(b *testing.B) {
		for b.Loop() {
			Decode(context.Background(), shares, (&oracle{want: sec}).fits)
		}
	})
	b.Run("tampered-commitment", func(b *testing.B) {
		for b.Loop() {
			Decode(context.Background(), shares, forged)
		}
	})
	b.Run("one-liar-first", func(b *testing.B) {
		for b.Loop() {
			Decode(context.Background(), liar, (&oracle{want: sec}).fits)
		}
	})
}

// Two colluding custodians (shares 1, 2 of 3-of-5) add c*x*(x-3) to
// their true shares: with share 3 they make a polynomial whose secret is
// the real one. Its three shares are below NamingQuorum, so callers do
// not take the honest shares 4 and 5 for liars.
func TestColludersCannotGetHonestSharesNamed(t *testing.T) {
	sec, shares := splitFor(t, 3, 5)
	for _, i := range []int{0, 1} {
		x := byte(i + 1)
		m := gfMul(x, x^3)
		for b := range 32 {
			shares[i].value[b] ^= gfMul(m, 0x5a)
		}
	}
	got, err := Decode(context.Background(), shares, (&oracle{want: sec}).fits)
	if err != nil || !bytes.Equal(got.Secret, sec) {
		t.Fatalf("no secret: %v", err)
	}
	if len(got.Fit) >= NamingQuorum(3) && !slices.Contains(got.Fit, 4) {
		t.Fatalf("fit %v would name honest share 4", got.Fit)
	}
}
