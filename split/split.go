// Package split divides a data-encryption key into n shares of which any k
// recover it (Shamir's secret sharing over GF(2^8), from
// github.com/hashicorp/vault/shamir), and frames each share so that it
// carries its own index and threshold.
//
// With k = 1 there is no splitting: every share is the whole secret. That
// gives redundancy (any one backend can decrypt) but no threshold custody,
// and callers should say so to the operator.
package split

import (
	"errors"
	"fmt"

	"github.com/hashicorp/vault/shamir"
)

// MaxShares is the largest n accepted. It bounds the work of trying share
// combinations when a backend lies (C(16,8) = 12870 at most).
const MaxShares = 16

// frameVersion is the first byte of every framed share.
const frameVersion = 1

// frameOverhead is version, threshold and index.
const frameOverhead = 3

// ErrMalformedShare reports a framed share that cannot be parsed.
var ErrMalformedShare = errors.New("malformed share")

// Share is one of the n pieces of a split secret.
type Share struct {
	Index     int    // 1..n: which backend this share belongs to
	Threshold int    // k: how many shares recover the secret
	value     []byte // the Shamir share (secret length + 1 tag byte), or the secret itself when k = 1
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
	parts, err := shamir.Split(secret, n, k)
	if err != nil {
		return nil, fmt.Errorf("split secret: %w", err)
	}
	for i, p := range parts {
		shares[i] = Share{Index: i + 1, Threshold: k, value: p}
	}
	return shares, nil
}

// Combine recovers the secret from exactly k shares of one split. It cannot
// tell a right answer from a wrong one (a lying share gives a different
// secret): callers must check the result against a commitment.
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
	return s, nil
}
