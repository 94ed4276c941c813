package split

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"slices"
	"testing"
)

// Liars that know their own true shares and bend their answers against
// Decode's search.

// liarStrategy rewrites the liars' shares (in place) given the true ones.
type liarStrategy func(rng *mrand.Rand, shares []Share, liars, honest []int)

// shift returns share i moved by c*prod(x_i - r) over roots r, so that
// every liar moved by the same c and roots lies on one polynomial that
// agrees with the true one at the roots (which the liars need not know
// the share values of: x-coordinates are public).
func shift(s Share, roots []byte, c []byte) Share {
	v := bytes.Clone(s.value)
	m := byte(1)
	for _, r := range roots {
		m = gfMul(m, byte(s.Index)^r)
	}
	for b := range len(v) - 1 {
		v[b] ^= gfMul(m, c[b])
	}
	return Share{Index: s.Index, Threshold: s.Threshold, value: v}
}

func nonzero(rng *mrand.Rand, n int) []byte {
	c := make([]byte, n)
	for i := range c {
		c[i] = byte(rng.IntN(255) + 1)
	}
	return c
}

var liarStrategies = map[string]liarStrategy{
	"noise": func(rng *mrand.Rand, s []Share, liars, _ []int) {
		for _, i := range liars {
			s[i] = lie(s[i], rng)
		}
	},
	"keep-byte-0": func(rng *mrand.Rand, s []Share, liars, _ []int) {
		for _, i := range liars {
			v := bytes.Clone(s[i].value)
			for b := 1; b < len(v)-1; b++ {
				v[b] ^= byte(rng.IntN(255) + 1)
			}
			s[i] = Share{Index: s[i].Index, Threshold: s[i].Threshold, value: v}
		}
	},
	// The liars agree with each other and with up to k-1 honest shares.
	"collude-with-honest": func(rng *mrand.Rand, s []Share, liars, honest []int) {
		k := s[0].Threshold
		var roots []byte
		for _, h := range honest[:min(len(honest), k-1)] {
			roots = append(roots, byte(s[h].Index))
		}
		c := nonzero(rng, len(s[0].value)-1)
		for _, i := range liars {
			s[i] = shift(s[i], roots, c)
		}
	},
	// Two camps of liars, each on its own wrong polynomial.
	"two-camps": func(rng *mrand.Rand, s []Share, liars, honest []int) {
		k := s[0].Threshold
		for camp, half := range [][]int{liars[:len(liars)/2], liars[len(liars)/2:]} {
			var roots []byte
			for _, h := range honest[camp%len(honest) : min(len(honest), camp%len(honest)+k-1)] {
				roots = append(roots, byte(s[h].Index))
			}
			c := nonzero(rng, len(s[0].value)-1)
			for _, i := range half {
				s[i] = shift(s[i], roots, c)
			}
		}
	},
}

// Whatever k-1 colluding liars do, k honest shares give the secret, and
// Fit is at least k shares of one polynomial through it. Liars that do
// not coordinate (noise) are exactly the shares left out of Fit;
// colluders can take honest shares' place in Fit, since the commitment
// binds the secret, not the shares.
func TestDecodeFindsTheSecretWhateverTheLiarsDo(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(11, 12))
	rounds := 0
	for n := 2; n <= 9; n++ {
		for k := 2; k <= n; k++ {
			for name, strategy := range liarStrategies {
				for liarsN := 1; liarsN <= min(n-k, k-1); liarsN++ {
					rounds++
					sec, shares := splitFor(t, k, n)
					perm := rng.Perm(n)
					liars, honest := perm[:liarsN], perm[liarsN:]
					slices.Sort(honest)
					strategy(rng, shares, liars, honest)
					// Liars answer first, as a fast liar would.
					order := append(slices.Clone(liars), rng.Perm(len(honest))...)
					for i := liarsN; i < len(order); i++ {
						order[i] = honest[order[i]]
					}
					var in []Share
					for _, i := range order {
						in = append(in, shares[i])
					}
					o := &oracle{want: sec}
					got, err := Decode(context.Background(), in, o.fits)
					if err != nil || !bytes.Equal(got.Secret, sec) {
						t.Fatalf("%s %d of %d, liars %v: no secret (%v)", name, k, n, liars, err)
					}
					if len(got.Fit) < k || !onOnePolynomial(t, shares, got.Fit, sec) {
						t.Fatalf("%s %d of %d, liars %v: fit %v is not k shares of one polynomial through the secret", name, k, n, liars, got.Fit)
					}
					if name == "noise" || name == "keep-byte-0" {
						var want []int
						for _, h := range honest {
							want = append(want, shares[h].Index)
						}
						if fit := slices.Sorted(slices.Values(got.Fit)); !slices.Equal(fit, want) {
							t.Fatalf("%s %d of %d, liars %v: fit %v, want the honest %v", name, k, n, liars, fit, want)
						}
					}
				}
			}
		}
	}
	if rounds < 100 {
		t.Fatalf("only %d rounds", rounds)
	}
}

// Fewer than k honest shares: fits (which accepts only the true secret)
// is never satisfied by anything the liars make, and nothing is returned.
func TestDecodeReturnsNothingWithoutKHonestShares(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(13, 14))
	for _, tc := range []struct{ k, n int }{{3, 4}, {3, 5}, {4, 7}, {5, 9}} {
		for name, strategy := range liarStrategies {
			sec, shares := splitFor(t, tc.k, tc.n)
			// At most k-1 liars: k of them would be k custodians, who
			// know the secret.
			perm := rng.Perm(tc.n)
			liars, honest := perm[:min(tc.n-tc.k+1, tc.k-1)], perm[tc.n-tc.k+1:]
			slices.Sort(honest)
			strategy(rng, shares, liars, honest)
			var in []Share
			for _, i := range append(slices.Clone(liars), honest...) {
				in = append(in, shares[i])
			}
			accepted := 0
			got, err := Decode(context.Background(), in, func(s []byte) bool {
				if bytes.Equal(s, sec) {
					accepted++
				}
				return bytes.Equal(s, sec)
			})
			if err != nil || got.Secret != nil || accepted != 0 {
				t.Fatalf("%s %d of %d: secret %v, %v, true secret offered %d times", name, tc.k, tc.n, got.Secret != nil, err, accepted)
			}
		}
	}
}

// Candidates that fits refused are wiped once refused: a caller that
// keeps the slice (or the heap) holds zeros, not a wrong polynomial's
// constant term derived from real shares.
func TestDecodeWipesRefusedCandidates(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(15, 16))
	for _, tc := range []struct{ k, n, liars int }{{1, 4, 2}, {3, 5, 2}, {5, 9, 4}} {
		sec, shares := splitFor(t, tc.k, tc.n)
		for i := range tc.liars {
			shares[i] = lie(shares[i], rng)
		}
		var refused [][]byte
		got, err := Decode(context.Background(), shares, func(s []byte) bool {
			if bytes.Equal(s, sec) {
				return true
			}
			refused = append(refused, s)
			return false
		})
		if err != nil || !bytes.Equal(got.Secret, sec) {
			t.Fatalf("%d of %d: %v", tc.k, tc.n, err)
		}
		if len(refused) == 0 {
			t.Fatalf("%d of %d: nothing refused; the liars were not tried", tc.k, tc.n)
		}
		for _, r := range refused {
			if !bytes.Equal(r, make([]byte, len(r))) {
				t.Fatalf("%d of %d: a refused candidate was left in memory", tc.k, tc.n)
			}
		}
	}
}

// onOnePolynomial reports whether the shares with the given indexes, with
// (0, secret), lie on one polynomial of degree below k.
func onOnePolynomial(t *testing.T, shares []Share, fit []int, secret []byte) bool {
	t.Helper()
	var pick []Share
	for _, s := range shares {
		if slices.Contains(fit, s.Index) {
			pick = append(pick, s)
		}
	}
	k := pick[0].Threshold
	for _, s := range pick[k-1:] {
		got, err := Combine(append(slices.Clone(pick[:k-1]), s))
		if err != nil || !bytes.Equal(got, secret) {
			return false
		}
	}
	return true
}
