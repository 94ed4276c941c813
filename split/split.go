// Package split divides a data-encryption key into n shares of which any k
// recover it (Shamir's secret sharing over GF(2^8), the field of
// github.com/hashicorp/vault/shamir), and frames each share with its index
// and threshold.
//
// A share's x-coordinate is its index (1..n), checked wherever a share is
// parsed or combined: an attacker holding one backend would set x = 0,
// which zeroes every other share's Lagrange weight and makes the secret
// that share's bytes.
//
// With k = 1 every share is the whole secret: redundancy without threshold
// custody, which callers should tell the operator.
package split

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/shamir"
)

// MaxShares is the largest n accepted. It bounds the work of trying share
// combinations when a backend lies (C(16,8) = 12870 at most).
const MaxShares = 16

// frameVersion is the first byte of a framed share. Version 1 drew random
// x-coordinates and is refused: a share whose x is not its index cannot be
// told from a forged one.
const frameVersion = 2

// frameOverhead is version, threshold and index.
const frameOverhead = 3

// ErrMalformedShare reports a framed share that cannot be parsed.
var ErrMalformedShare = errors.New("malformed share")

// Share is one of the n pieces of a split secret.
type Share struct {
	Index     int    // 1..n: which backend this share belongs to
	Threshold int    // k: how many shares recover the secret
	value     []byte // the Shamir share (y bytes, then x = Index), or the secret itself when k = 1
}

// ValidateThreshold checks 1 <= k <= n <= MaxShares.
func ValidateThreshold(k, n int) error {
	switch {
	case n < 1:
		return fmt.Errorf("need at least 1 backend, got %d", n)
	case n > MaxShares:
		return fmt.Errorf("at most %d backends are supported, got %d", MaxShares, n)
	case k < 1:
		return fmt.Errorf("threshold must be at least 1, got %d", k)
	case k > n:
		return fmt.Errorf("threshold %d is larger than the number of backends %d", k, n)
	}
	return nil
}

// Split returns n shares of secret, any k of which recover it.
func Split(secret []byte, k, n int) ([]Share, error) {
	if err := ValidateThreshold(k, n); err != nil {
		return nil, err
	}
	if len(secret) == 0 {
		return nil, errors.New("cannot split an empty secret")
	}
	shares := make([]Share, n)
	if k == 1 {
		for i := range shares {
			shares[i] = Share{Index: i + 1, Threshold: 1, value: append([]byte(nil), secret...)}
		}
		return shares, nil
	}
	for i := range shares {
		shares[i] = Share{Index: i + 1, Threshold: k, value: make([]byte, len(secret)+1)}
		shares[i].value[len(secret)] = byte(i + 1)
	}
	// Per byte, a random polynomial of degree k-1 with the byte as constant term.
	coeffs := make([]byte, k)
	defer clear(coeffs)
	for j, b := range secret {
		if _, err := rand.Read(coeffs[1:]); err != nil {
			return nil, fmt.Errorf("split secret: %w", err)
		}
		coeffs[0] = b
		for i := range shares {
			shares[i].value[j] = evaluate(coeffs, byte(i+1))
		}
	}
	return shares, nil
}

// Combine recovers the secret from exactly k shares of one split. A lying
// share gives a different secret, so callers must check the result against
// a commitment, or use [Decode].
func Combine(shares []Share) ([]byte, error) {
	if len(shares) == 0 {
		return nil, errors.New("no shares to combine")
	}
	k := shares[0].Threshold
	if len(shares) != k {
		return nil, fmt.Errorf("need exactly %d shares, got %d", k, len(shares))
	}
	seen := make(map[int]bool, k)
	for _, s := range shares {
		if s.Threshold != k {
			return nil, fmt.Errorf("share %d has threshold %d, want %d", s.Index, s.Threshold, k)
		}
		if err := s.checkX(); err != nil {
			return nil, err
		}
		if seen[s.Index] {
			return nil, fmt.Errorf("share %d given twice", s.Index)
		}
		seen[s.Index] = true
	}
	if k == 1 {
		return append([]byte(nil), shares[0].value...), nil
	}
	parts := make([][]byte, k)
	for i, s := range shares {
		parts[i] = s.value
	}
	secret, err := shamir.Combine(parts)
	if err != nil {
		return nil, fmt.Errorf("combine shares: %w", err)
	}
	return secret, nil
}

// Marshal frames the share: version, threshold, index, value.
func (s Share) Marshal() []byte {
	out := make([]byte, 0, frameOverhead+len(s.value))
	out = append(out, frameVersion, byte(s.Threshold), byte(s.Index))
	return append(out, s.value...)
}

// Wipe overwrites the share's secret bytes.
func (s Share) Wipe() { clear(s.value) }

// Parse reads a framed share of a secret of secretLen bytes.
func Parse(b []byte, secretLen int) (Share, error) {
	if len(b) < frameOverhead {
		return Share{}, fmt.Errorf("%w: %d bytes", ErrMalformedShare, len(b))
	}
	if b[0] == 1 {
		return Share{}, fmt.Errorf("%w: format 1 of the first builds (random x-coordinates) is no longer accepted", ErrMalformedShare)
	}
	if b[0] != frameVersion {
		return Share{}, fmt.Errorf("%w: unknown version %d", ErrMalformedShare, b[0])
	}
	s := Share{Threshold: int(b[1]), Index: int(b[2])}
	if s.Threshold < 1 || s.Threshold > MaxShares || s.Index < 1 || s.Index > MaxShares {
		return Share{}, fmt.Errorf("%w: threshold %d, index %d out of range", ErrMalformedShare, s.Threshold, s.Index)
	}
	want := secretLen
	if s.Threshold > 1 {
		want++ // Shamir's x-coordinate tag
	}
	if len(b)-frameOverhead != want {
		return Share{}, fmt.Errorf("%w: value is %d bytes, want %d", ErrMalformedShare, len(b)-frameOverhead, want)
	}
	s.value = append([]byte(nil), b[frameOverhead:]...)
	if err := s.checkX(); err != nil {
		s.Wipe()
		return Share{}, fmt.Errorf("%w: %v", ErrMalformedShare, err)
	}
	return s, nil
}

// checkX refuses a share whose x-coordinate is not its index (so never 0).
func (s Share) checkX() error {
	if s.Threshold == 1 {
		return nil
	}
	if len(s.value) < 2 {
		return fmt.Errorf("share %d is empty", s.Index)
	}
	if x := int(s.value[len(s.value)-1]); x != s.Index || x == 0 {
		return fmt.Errorf("share %d has x-coordinate %d: a share's x must be its index", s.Index, x)
	}
	return nil
}
