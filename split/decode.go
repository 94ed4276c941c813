package split

import (
	"context"
	"crypto/subtle"
	"fmt"
	"math/bits"
)

// Decoded is what [Decode] found.
type Decoded struct {
	// Secret is the secret that fits, or nil.
	Secret []byte
	// Fit holds the indexes of the shares on Secret's polynomial; those
	// outside it are wrong if len(Fit) >= [NamingQuorum](k).
	Fit []int
	// Agree, when no secret fits, holds the indexes of the largest set of
	// more than k shares on one polynomial, or nil; if it has at least
	// [TamperedQuorum](k), the commitment is the fake.
	Agree []int
}

// TamperedQuorum is how many shares on one polynomial that the commitment
// refuses prove the commitment fake. A wrong polynomial passes through at
// most k-1 right shares, so with k-1 wrong ones (k-1 colluding
// custodians) at most 2k-2 agree on it.
func TamperedQuorum(k int) int { return max(k+1, 2*k-1) }

// NamingQuorum is how many shares on a polynomial whose secret fits prove
// the shares outside it wrong. Another polynomial with the same secret
// meets the true one at x = 0 and at most k-2 right shares, so with k-1
// wrong ones at most 2k-3 shares lie on it.
func NamingQuorum(k int) int { return max(k, 2*k-2) }

// maxLoneTries bounds the polynomials through exactly k shares offered to
// fits, needed only when exactly k right shares came back beside wrong
// ones; past it the search gives up rather than spend seconds of CPU on
// one header.
const maxLoneTries = 2048

// Decode finds the secret that fits among shares of which some may be
// wrong, calling fits on candidate secrets until it returns true, and
// checking ctx as it goes.
//
// Each polynomial is interpolated once, not once per k-subset on it, so a
// tampered commitment costs one fits call, and one through
// [TamperedQuorum] shares that does not fit ends the search. Subsets are
// tried by distance from the first k shares: one wrong share is routed
// around after at most k*(m-k) interpolations. Polynomials through
// exactly k shares are tried only when m < 2k, and at most maxLoneTries.
func Decode(ctx context.Context, shares []Share, fits func(secret []byte) bool) (Decoded, error) {
	return decode(ctx, shares, fits, maxLoneTries)
}

// DecodeSoFar is [Decode] while more shares may still come: it tries at
// most len(shares) polynomials through exactly k shares (always the first
// k), leaving the rest to a Decode once all are in.
func DecodeSoFar(ctx context.Context, shares []Share, fits func(secret []byte) bool) (Decoded, error) {
	return decode(ctx, shares, fits, len(shares))
}

func decode(ctx context.Context, shares []Share, fits func([]byte) bool, lone int) (Decoded, error) {
	d, err := newDecoder(shares)
	if err != nil || len(shares) < d.k {
		return Decoded{}, err
	}
	if d.k == 1 {
		return d.single(fits), nil
	}
	if d.m >= 2*d.k {
		lone = 0 // k-1 wrong shares leave the right polynomial k+1 shares
	}
	return d.search(ctx, fits, lone)
}

// decoder holds the shares' points: xs are public, ys secret and only
// multiplied in constant time.
type decoder struct {
	k, m int
	xs   []byte
	ys   [][]byte
}

func newDecoder(shares []Share) (*decoder, error) {
	if len(shares) == 0 {
		return &decoder{k: 1}, nil
	}
	if len(shares) > MaxShares {
		return nil, fmt.Errorf("at most %d shares can be decoded, got %d", MaxShares, len(shares))
	}
	d := &decoder{k: shares[0].Threshold, m: len(shares)}
	seen := map[int]bool{}
	for _, s := range shares {
		if s.Threshold != d.k {
			return nil, fmt.Errorf("share %d has threshold %d, want %d", s.Index, s.Threshold, d.k)
		}
		if err := s.checkX(); err != nil {
			return nil, err
		}
		if seen[s.Index] {
			return nil, fmt.Errorf("share %d given twice", s.Index)
		}
		seen[s.Index] = true
		y := s.value
		if d.k > 1 {
			y = y[:len(y)-1] // drop the x tag
		}
		d.xs = append(d.xs, byte(s.Index))
		d.ys = append(d.ys, y)
	}
	for _, y := range d.ys {
		if len(y) != len(d.ys[0]) {
			return nil, fmt.Errorf("shares of different lengths")
		}
	}
	return d, nil
}

// single decodes k = 1, where every right share is the secret itself.
func (d *decoder) single(fits func([]byte) bool) Decoded {
	var tried, best uint32
	for j, y := range d.ys {
		if tried&(1<<j) != 0 {
			continue
		}
		agree := d.equalTo(y)
		tried |= agree
		candidate := append([]byte(nil), y...)
		if fits(candidate) {
			return Decoded{Secret: candidate, Fit: d.indexes(agree)}
		}
		clear(candidate)
		if bits.OnesCount32(agree) > max(1, bits.OnesCount32(best)) {
			best = agree
		}
	}
	return Decoded{Agree: d.indexes(best)}
}

func (d *decoder) equalTo(y []byte) uint32 {
	var mask uint32
	for j, other := range d.ys {
		if subtle.ConstantTimeCompare(y, other) == 1 {
			mask |= 1 << j
		}
	}
	return mask
}

// search offers fits each polynomial through more than k shares as found,
// then up to lone of those through exactly k.
func (d *decoder) search(ctx context.Context, fits func([]byte) bool, lone int) (Decoded, error) {
	all := uint32(1)<<d.m - 1
	var supported, unsupported []uint32 // agreement sets; subsets through k shares only
	var found Decoded
	var err error
	steps := 0
	d.bySubsetDistance(func(subset uint32) bool {
		if steps++; steps%256 == 0 && ctx.Err() != nil {
			err = ctx.Err()
			return false
		}
		for _, a := range supported {
			if subset&^a == 0 {
				return true // the same polynomial again
			}
		}
		agree := d.agreement(subset)
		n := bits.OnesCount32(agree)
		if n == d.k {
			if len(unsupported) < lone {
				unsupported = append(unsupported, subset)
			}
			return true
		}
		supported = append(supported, agree)
		if secret := d.tryFit(subset, fits); secret != nil {
			found = Decoded{Secret: secret, Fit: d.indexes(agree)}
			return false
		}
		// Every share on it, or too many for k-1 liars to fake: no other
		// polynomial is worth trying.
		return agree != all && n < TamperedQuorum(d.k)
	})
	if err != nil || found.Secret != nil {
		return found, err
	}
	if best := largest(supported); bits.OnesCount32(best) >= TamperedQuorum(d.k) {
		return Decoded{Agree: d.indexes(best)}, nil
	}
	for i, s := range unsupported {
		if i%256 == 255 && ctx.Err() != nil {
			return Decoded{}, ctx.Err()
		}
		if secret := d.tryFit(s, fits); secret != nil {
			return Decoded{Secret: secret, Fit: d.indexes(s)}, nil
		}
	}
	return Decoded{Agree: d.indexes(largest(supported))}, nil
}

func largest(masks []uint32) uint32 {
	var best uint32
	for _, a := range masks {
		if bits.OnesCount32(a) > bits.OnesCount32(best) {
			best = a
		}
	}
	return best
}

func (d *decoder) tryFit(subset uint32, fits func([]byte) bool) []byte {
	secret := d.interpolate(subset, 0)
	if fits(secret) {
		return secret
	}
	clear(secret)
	return nil
}

// agreement returns the shares on the polynomial through subset, subset
// included. Byte 0 is compared first, so a wrong share usually costs one
// multiplication per point (a timing leak of byte 0 only; see
// docs/how-it-works.md).
func (d *decoder) agreement(subset uint32) uint32 {
	agree := subset
	for j := range d.m {
		if subset&(1<<j) != 0 {
			continue
		}
		weights := d.weights(subset, d.xs[j])
		if evalByte(weights, d.ys, subset, 0) != d.ys[j][0] {
			continue
		}
		y := d.evalAll(weights, subset)
		if subtle.ConstantTimeCompare(y, d.ys[j]) == 1 {
			agree |= 1 << j
		}
		clear(y) // share j's bytes, when it agrees
	}
	return agree
}

// interpolate evaluates the polynomial through subset at x.
func (d *decoder) interpolate(subset uint32, x byte) []byte {
	return d.evalAll(d.weights(subset, x), subset)
}

func (d *decoder) evalAll(weights []byte, subset uint32) []byte {
	out := make([]byte, len(d.ys[0]))
	for b := range out {
		out[b] = evalByte(weights, d.ys, subset, b)
	}
	return out
}

// evalByte sums weight * y over the subset for byte b; weights are public,
// y is multiplied in constant time.
func evalByte(weights []byte, ys [][]byte, subset uint32, b int) byte {
	var sum byte
	w := 0
	for i := range ys {
		if subset&(1<<i) != 0 {
			sum ^= gfMul(weights[w], ys[i][b])
			w++
		}
	}
	return sum
}

// weights returns the Lagrange basis of subset evaluated at x, in subset
// order: w_i = prod over j != i of (x - x_j) / (x_i - x_j).
func (d *decoder) weights(subset uint32, x byte) []byte {
	out := make([]byte, 0, d.k)
	for i := range d.m {
		if subset&(1<<i) == 0 {
			continue
		}
		w := byte(1)
		for j := range d.m {
			if j != i && subset&(1<<j) != 0 {
				w = pubMul(w, pubDiv(x^d.xs[j], d.xs[i]^d.xs[j]))
			}
		}
		out = append(out, w)
	}
	return out
}

// bySubsetDistance calls f with every k-subset of the shares (a bit mask),
// fewest swaps from the first k first, until f returns false.
func (d *decoder) bySubsetDistance(f func(uint32) bool) {
	first := uint32(1)<<d.k - 1
	rest := make([]int, 0, d.m-d.k)
	for j := d.k; j < d.m; j++ {
		rest = append(rest, j)
	}
	in := make([]int, d.k)
	for i := range in {
		in[i] = i
	}
	for dist := 0; dist <= min(d.k, d.m-d.k); dist++ {
		more := eachCombination(in, dist, func(out uint32) bool {
			return eachCombination(rest, dist, func(add uint32) bool {
				return f(first&^out | add)
			})
		})
		if !more {
			return
		}
	}
}

// eachCombination calls f with every size-subset of from (as a bit mask
// of the values) until f returns false, and reports whether it did not.
func eachCombination(from []int, size int, f func(uint32) bool) bool {
	var rec func(start int, mask uint32, left int) bool
	rec = func(start int, mask uint32, left int) bool {
		if left == 0 {
			return f(mask)
		}
		for i := start; i <= len(from)-left; i++ {
			if !rec(i+1, mask|1<<from[i], left-1) {
				return false
			}
		}
		return true
	}
	return rec(0, 0, size)
}

func (d *decoder) indexes(mask uint32) []int {
	var out []int
	for j := range d.m {
		if mask&(1<<j) != 0 {
			out = append(out, int(d.xs[j]))
		}
	}
	return out
}
