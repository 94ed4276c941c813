package envelope

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
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
	// HeaderTampered: more than k shares agree with each other, but none
	// fits this header: the header is a tampered copy, and the backends
	// are not to blame.
	HeaderTampered bool
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
	// ErrNoShareFits: k or more shares came back, but no k of them fit
	// the header, and too few agree with each other to tell whether a
	// custodian lies or the header was tampered with.
	ErrNoShareFits = errors.New("returned a share, but no k shares fit the header: a custodian lies or the header was tampered with")
	// ErrSharesDisagree: the DEK was found, but this share is not on the
	// polynomial of those that made it, and too few made it to tell
	// whether this backend lies or k-1 others collude.
	ErrSharesDisagree = errors.New("returned a share that is not on the polynomial of those that made the DEK, and too few made it to tell which side lies")
	// ErrHeaderTampered: the share agrees with more than k others, so the
	// custodians agree, but not with this header's commitment.
	ErrHeaderTampered = errors.New("the share agrees with the other custodians' shares but not with this header: the header was tampered with")
)

// Drill asks every backend named in the header for its share, in
// parallel, waits for all of them (each under ctx), and checks each share.
// It makes one unwrap per backend, and never caches or adopts anything:
// a drill must not change what the plugin does. An error means the header
// itself is not usable (malformed, or below the threshold floor).
func (e *Envelope) Drill(ctx context.Context, raw []byte) (DEKCheck, error) {
	s := e.NewDrillSession()
	defer s.Close()
	return s.Check(ctx, raw)
}

// DrillSession drills several headers, unwrapping each distinct wrapped
// share once: copies of a header that an etcd writer changed elsewhere
// cost no backend call, and are judged by the same shares as the
// genuine one. Close wipes the shares it holds.
type DrillSession struct {
	open   *opener
	mu     sync.Mutex
	shares map[[32]byte]shareResult
}

// NewDrillSession starts a drill session.
func (e *Envelope) NewDrillSession() *DrillSession {
	return &DrillSession{open: e.open, shares: map[[32]byte]shareResult{}}
}

// Close wipes every share the session unwrapped.
func (s *DrillSession) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.shares {
		r.share.Wipe()
		delete(s.shares, k)
	}
}

// Unasked counts the shares of the header that Check would ask a backend
// for (not unwrapped earlier in the session); -1 if the header is unusable.
func (s *DrillSession) Unasked(raw []byte) int {
	h, err := s.open.parse(raw)
	if err != nil {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ws := range h.Shares {
		if _, ok := s.shares[unwrapKey(h, ws)]; !ok {
			n++
		}
	}
	return n
}

// Check drills one header.
func (s *DrillSession) Check(ctx context.Context, raw []byte) (DEKCheck, error) {
	h, err := s.open.parse(raw)
	if err != nil {
		return DEKCheck{}, err
	}
	results := s.unwrapAll(ctx, h)
	var good []split.Share
	for _, r := range results {
		if r.err == nil {
			good = append(good, r.share)
		}
	}
	found, err := split.Decode(ctx, good, func(key []byte) bool { return h.verify(raw, key) })
	clear(found.Secret)
	if err != nil {
		return DEKCheck{}, err
	}
	check := DEKCheck{KeyID: h.KeyID(), Generation: h.Generation, Created: h.Created, Threshold: h.Threshold,
		Shares: make([]ShareCheck, len(h.Shares))}
	check.HeaderTampered = found.Secret == nil && len(found.Agree) >= split.TamperedQuorum(h.Threshold)
	named := found.Secret != nil && s.open.reportMisfits(h, good, found.Fit)
	for i, r := range results {
		check.Shares[i] = ShareCheck{Backend: h.Shares[i].Backend, Err: r.err}
		if r.err != nil {
			continue
		}
		switch {
		case found.Secret != nil && slices.Contains(found.Fit, i+1):
			check.Shares[i].OK = true
			check.Working++
		case found.Secret != nil && named:
			check.Shares[i].Err = errShareDoesNotFit
		case found.Secret != nil:
			check.Shares[i].Err = ErrSharesDisagree
		case check.HeaderTampered && slices.Contains(found.Agree, i+1):
			check.Shares[i].Err = ErrHeaderTampered
		case len(good) < h.Threshold:
			check.Shares[i].Err = ErrShareUnverified
		default:
			check.Shares[i].Err = ErrNoShareFits
		}
	}
	return check, nil
}

// unwrapAll returns every share of the header, in header order, asking
// in parallel the backends not asked for that wrapped share before.
func (s *DrillSession) unwrapAll(ctx context.Context, h *Header) []shareResult {
	results := make([]shareResult, len(h.Shares))
	var wg sync.WaitGroup
	for i, ws := range h.Shares {
		key := unwrapKey(h, ws)
		s.mu.Lock()
		r, ok := s.shares[key]
		s.mu.Unlock()
		if ok {
			results[i] = r
			continue
		}
		wg.Go(func() {
			r := s.open.unwrapShare(ctx, h, ws)
			results[i] = r
			// A call cancelled by the caller says nothing of the
			// backend; one that ran out of the check's time did answer
			// (late), and is not asked again for a copy of the header.
			if !errors.Is(ctx.Err(), context.Canceled) {
				s.mu.Lock()
				s.shares[key] = r
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
	return results
}

// unwrapKey names what a backend is asked to unwrap: the wrapped bytes,
// its key identity and the associated data that binds it to its DEK.
func unwrapKey(h *Header, ws WrappedShare) [32]byte {
	sum := sha256.New()
	for _, part := range [][]byte{[]byte(ws.Backend), []byte(ws.KeyIdentity), ws.Wrapped, h.shareAAD(ws.Index, len(h.Shares))} {
		sum.Write(binary.BigEndian.AppendUint32(nil, uint32(len(part))))
		sum.Write(part)
	}
	return [32]byte(sum.Sum(nil))
}

// ErrDrillNoDEK reports a drill with no DEK to check.
var ErrDrillNoDEK = errors.New("no DEK to drill")

// StateHeaders returns the wrapped DEKs of the state dir: the current one
// first, then those set aside as unusable, newest first; the names of the
// files they came from are returned alongside.
func StateHeaders(stateDir string) (headers [][]byte, files []string, err error) {
	return (&stateFile{dir: stateDir}).all()
}

// PreviousHeaders returns the earlier DEKs kept in the state file, newest
// first; none without a state dir or while it cannot be read. A custodian
// may tell the truth about the current DEK and lie about older ones:
// drilling these in turn catches that before the data is needed.
func (e *Envelope) PreviousHeaders() [][]byte {
	if e.life.state == nil {
		return nil
	}
	return e.life.state.previous()
}
