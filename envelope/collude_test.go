package envelope

import (
	"context"
	"errors"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// gf multiplies in GF(2^8) mod 0x11b (test-only, not constant time).
func gfMulSlow(a, b byte) byte {
	var p byte
	for range 8 {
		if b&1 != 0 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1b
		}
		b >>= 1
	}
	return p
}

// colluder unwraps its true share and adds c*prod(x - r) over roots
// (x-coordinates are public): colluders with the same roots land on one
// wrong polynomial that agrees with the true one at the roots.
type colluder struct {
	kmsclients.Backend
	roots []byte
}

func (c colluder) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	share, err := c.Backend.Unwrap(ctx, w, aad)
	if err != nil {
		return nil, err
	}
	x := share[len(share)-1]
	m := byte(1)
	for _, r := range c.roots {
		m = gfMulSlow(m, x^r)
	}
	for b := 3; b < len(share)-1; b++ {
		share[b] ^= gfMulSlow(m, 0x5a)
	}
	return share, nil
}

// Two colluders of 3-of-5 (b1, b2) add c*x*(x-3): with b3 they make a
// polynomial whose constant term is the DEK. Only three shares are on it,
// too few to prove the other two wrong, so the honest b4 and b5 are not
// blamed (nor counted as liars).
func TestDrillDoesNotBlameHonestCustodiansForColluders(t *testing.T) {
	bs := newLocals(t, 5)
	maker := mustNew(t, Config{Threshold: 3, Backends: bs})
	s := mustEncrypt(t, maker, seed)
	roots := []byte{0, 3}
	obs := &mismatches{}
	e, err := New(Config{Threshold: 3, Observer: obs, Backends: []kmsclients.Backend{colluder{bs[0], roots}, colluder{bs[1], roots}, bs[2], bs[3], bs[4]}})
	if err != nil {
		t.Fatal(err)
	}
	check, err := e.Drill(ctxT(t), s.Header)
	if err != nil {
		t.Fatal(err)
	}
	for i, sc := range check.Shares {
		honest := i >= 2
		if honest && (errors.Is(sc.Err, errShareDoesNotFit) || obs.count(sc.Backend) != 0) {
			t.Errorf("honest %s blamed: %v (mismatch metric %d)", sc.Backend, sc.Err, obs.count(sc.Backend))
		}
		if honest && !sc.OK && !errors.Is(sc.Err, ErrSharesDisagree) {
			t.Errorf("honest %s: %v, want ok or ErrSharesDisagree", sc.Backend, sc.Err)
		}
	}
}

// Two colluders of 3-of-4 add c*(x-3)(x-4): with the two honest shares
// they make four shares on one wrong polynomial. Four is below
// TamperedQuorum(3), so neither Decrypt nor the drill calls the genuine
// header tampered.
func TestDrillOfAGenuineHeaderIsNotCalledTamperedByColluders(t *testing.T) {
	bs := newLocals(t, 4)
	maker := mustNew(t, Config{Threshold: 3, Backends: bs})
	s := mustEncrypt(t, maker, seed)
	roots := []byte{3, 4}
	e, err := New(Config{Threshold: 3, Backends: []kmsclients.Backend{colluder{bs[0], roots}, colluder{bs[1], roots}, bs[2], bs[3]}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err == nil {
		t.Fatal("decrypted with two colluders of 3-of-4")
	} else {
		if qe := (*QuorumError)(nil); errors.As(err, &qe) && qe.Tampered {
			t.Fatalf("decrypt calls the genuine header tampered: %v", err)
		}
	}
	check, err := e.Drill(ctxT(t), s.Header)
	if err != nil {
		t.Fatal(err)
	}
	if check.HeaderTampered {
		t.Fatalf("genuine header judged tampered by two colluders: %+v", check)
	}
}
