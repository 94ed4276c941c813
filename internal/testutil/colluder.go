package testutil

import (
	"context"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Colluder is a custodian that adds c*prod(x - r) over Roots to its true
// share (x is the public index): colluders with the same Roots land on
// one wrong polynomial that meets the true one at the roots, and with 0
// among them has the true secret.
type Colluder struct {
	kmsclients.Backend
	Roots []byte
}

// Unwrap implements kmsclients.Backend.
func (c Colluder) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	share, err := c.Backend.Unwrap(ctx, w, aad)
	if err != nil {
		return nil, err
	}
	m := byte(1)
	for _, r := range c.Roots {
		m = gfMul(m, share[len(share)-1]^r)
	}
	for b := 3; b < len(share)-1; b++ { // after version, k, index; before x
		share[b] ^= gfMul(m, 0x5a)
	}
	return share, nil
}

// gfMul multiplies in GF(2^8) modulo 0x11b, the field of the shares.
func gfMul(a, b byte) byte {
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
