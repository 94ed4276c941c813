package envelope

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// Custody drills. Threshold custody fails silently: while k backends
// answer, a lost key file or a revoked grant goes unnoticed until one
// more loss makes data unreadable. A drill asks every backend of a DEK
// for its share (not just the first k) and checks each share against the
// DEK's commitment, so the margin left is known before the disaster.

// ShareCheck is how one backend did with its share of a DEK.
type ShareCheck struct {
	Backend string
	// OK: the share came back and lies on the DEK's polynomial (checked
	// against the commitment with k-1 other shares).
	OK bool
	// Err says why not, when the backend answered with an error or a share
	// that does not fit; kmsclients.Kind(Err) names its kind.
	Err error
}

// DEKCheck is the result of drilling one DEK.
type DEKCheck struct {
	KeyID      string
	Generation uint32
	Created    time.Time
	Threshold  int
	Shares     []ShareCheck // in header order
	Working    int          // shares that checked out
}

// Margin is how many more backends may be lost before the DEK is
// unrecoverable: working shares minus k. Below 0 it already is.
func (c DEKCheck) Margin() int { return c.Working - c.Threshold }

var (
	// errShareDoesNotFit: the backend returned a share, but not one of this DEK.
	errShareDoesNotFit = fmt.Errorf("the share does not fit the DEK's commitment: %w", kmsclients.ErrInvalidCiphertext)
	// ErrShareUnverified: the backend returned a share, but with fewer
	// than k shares back none can be checked, so it does not count as
	// working (a lying backend's share looks the same).
	ErrShareUnverified = errors.New("returned a share, but fewer than k shares came back to check it against")
)

// Drill asks every backend named in the header for its share, in
// parallel, waits for all of them (each under ctx), and checks each share.
// It makes one unwrap per backend, and never caches or adopts anything:
// a drill must not change what the plugin does. An error means the header
// itself is not usable (malformed, or below the threshold floor).
func (e *Envelope) Drill(ctx context.Context, raw []byte) (DEKCheck, error) {
	h, err := e.parseHeader(raw)
	if err != nil {
		return DEKCheck{}, err
	}
	check := DEKCheck{KeyID: h.KeyID(), Generation: h.Generation, Created: h.Created, Threshold: h.Threshold,
		Shares: make([]ShareCheck, len(h.Shares))}
	results := make([]shareResult, len(h.Shares))
	done := make(chan struct{}, len(h.Shares))
	for i, ws := range h.Shares {
		go func() { results[i] = e.unwrapShare(ctx, h, ws); done <- struct{}{} }()
	}
	for range h.Shares {
		<-done
	}
	var good []split.Share
	for i, r := range results {
		check.Shares[i] = ShareCheck{Backend: h.Shares[i].Backend, Err: r.err}
		if r.err == nil {
			good = append(good, r.share)
		}
	}
	defer func() {
		for _, s := range good {
			s.Wipe()
		}
	}()
	basis := e.fittingSubset(h, raw, good)
	for i := range check.Shares {
		if check.Shares[i].Err != nil {
			continue
		}
		switch {
		case basis == nil && len(good) < h.Threshold:
			check.Shares[i].Err = ErrShareUnverified
		case basis != nil && fits(h, raw, basis, shareAt(good, i+1)):
			check.Shares[i].OK = true
			check.Working++
		default:
			check.Shares[i].Err = errShareDoesNotFit
		}
	}
	return check, nil
}

// fittingSubset returns k shares that combine to the committed DEK, or nil.
func (e *Envelope) fittingSubset(h *Header, raw []byte, good []split.Share) []split.Share {
	if len(good) < h.Threshold {
		return nil
	}
	var found []split.Share
	chooseSubsets(len(good), h.Threshold, func(idx []int) bool {
		pick := make([]split.Share, 0, h.Threshold)
		for _, i := range idx {
			pick = append(pick, good[i])
		}
		key, err := split.Combine(pick)
		if err != nil {
			return true
		}
		defer clear(key)
		if h.verify(raw, key) {
			found = pick
			return false
		}
		return true
	})
	return found
}

// fits reports whether s lies on the DEK's polynomial: s with k-1 shares
// of the basis (those other than s) combine to the committed DEK.
func fits(h *Header, raw []byte, basis []split.Share, s split.Share) bool {
	pick := []split.Share{s}
	for _, b := range basis {
		if len(pick) == h.Threshold {
			break
		}
		if b.Index != s.Index {
			pick = append(pick, b)
		}
	}
	key, err := split.Combine(pick)
	if err != nil {
		return false
	}
	defer clear(key)
	return h.verify(raw, key)
}

func shareAt(good []split.Share, index int) split.Share {
	for _, s := range good {
		if s.Index == index {
			return s
		}
	}
	return split.Share{}
}

// ErrDrillNoDEK reports a drill with no DEK to check.
var ErrDrillNoDEK = errors.New("no DEK to drill")

// StateHeaders returns the wrapped DEKs of the state dir: the current one
// first, then those set aside as unusable, newest first; the names of the
// files they came from are returned alongside.
func StateHeaders(stateDir string) (headers [][]byte, files []string, err error) {
	return (&stateFile{dir: stateDir}).all()
}
