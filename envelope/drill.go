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

// Custody drills: threshold custody fails silently (a lost key goes
// unnoticed while k others answer), so a drill checks every backend's share.

// ShareCheck is how one backend did with its share of a DEK.
type ShareCheck struct {
	Backend string
	OK      bool  // the share lies on the committed DEK's polynomial
	Err     error // why not; [kmsclients.Kind] names its kind
}

// DEKCheck is the result of drilling one DEK.
type DEKCheck struct {
	KeyID      string
	Generation uint32
	Created    time.Time
	Threshold  int
	Shares     []ShareCheck // in header order
	Working    int          // shares that checked out
	// HeaderTampered: more than k shares agree with each other but not
	// with this header, so the header is to blame, not the backends.
	HeaderTampered bool
}

// Margin is working shares minus k: how many more backends may be lost.
// Below 0 the DEK is unrecoverable.
func (c DEKCheck) Margin() int { return c.Working - c.Threshold }

var (
	errShareDoesNotFit = fmt.Errorf("the share does not fit the DEK's commitment: %w", kmsclients.ErrInvalidCiphertext)
	// ErrShareUnverified: fewer than k shares came back, so none can be
	// checked; a liar's share would look the same.
	ErrShareUnverified = errors.New("returned a share, but fewer than k shares came back to check it against")
	// ErrNoShareFits: no k shares fit, and too few agree to tell a liar
	// from a tampered header.
	ErrNoShareFits = errors.New("returned a share, but no k shares fit the header: a custodian lies or the header was tampered with")
	// ErrSharesDisagree: the share is off the DEK's polynomial, and too few
	// made the DEK to tell this backend lying from k-1 others colluding.
	ErrSharesDisagree = errors.New("returned a share that is not on the polynomial of those that made the DEK, and too few made it to tell which side lies")
	// ErrHeaderTampered: the custodians agree, but not with this header.
	ErrHeaderTampered = errors.New("the share agrees with the other custodians' shares but not with this header: the header was tampered with")
)

// Drill asks every backend of the header for its share, waits for all
// (under ctx) and checks each. It never caches or adopts: a drill must not
// change what the plugin does. An error means the header is unusable.
func (e *Envelope) Drill(ctx context.Context, raw []byte) (DEKCheck, error) {
	s := e.NewDrillSession()
	defer s.Close()
	return s.Check(ctx, raw)
}

// DrillSession drills several headers, unwrapping each distinct wrapped
// share once, so tampered copies of a header cost no backend call and are
// judged by the genuine one's shares. Close wipes them.
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

// Unasked counts the shares Check would still ask a backend for; -1 if
// the header is unusable.
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

// unwrapAll returns every share in header order, asking in parallel for
// those not unwrapped before.
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
			// A cancelled call says nothing of the backend; one past
			// the deadline did (it is slow), so it is kept.
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

// unwrapKey names one unwrap: wrapped bytes, key identity and AAD.
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

// StateHeaders returns the state dir's wrapped DEKs, current first (then
// its earlier ones), then those set aside, newest first; files names each
// one's source.
func StateHeaders(stateDir string) (headers [][]byte, files []string, err error) {
	return (&stateFile{dir: stateDir}).all()
}

// PreviousHeaders returns the earlier DEKs of the state file, newest
// first. Drill them too: a custodian may lie only about older DEKs.
func (e *Envelope) PreviousHeaders() [][]byte {
	if e.life.state == nil {
		return nil
	}
	return e.life.state.previous()
}
