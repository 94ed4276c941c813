package envelope

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/trousseau-io/trousseau/kmsclients"
)

const (
	// DefaultUnwrapTimeout bounds one unwrap of a DEK from the backends.
	DefaultUnwrapTimeout = 30 * time.Second
	// DefaultMaxUnwraps bounds the DEK unwraps in flight at once.
	DefaultMaxUnwraps = 16
	// failedHeaderTTL is how long a header that failed for good is
	// refused without asking the backends again.
	failedHeaderTTL = 5 * time.Minute
	// mismatchTTL is how long a header whose shares did not fit, while a
	// backend that might have fitted was out, is refused without asking.
	mismatchTTL = 30 * time.Second
)

// ErrBusy reports that too many DEK unwraps are already waiting.
var ErrBusy = fmt.Errorf("too many DEK unwraps in progress: %w", kmsclients.ErrUnavailable)

// dekIDOffset is where the DEK id sits in an encoded header (magic,
// version, k, n, generation, created).
const dekIDOffset = len(headerMagic) + 1 + 1 + 1 + 4 + 8

// dekFor finds the DEK a header wraps: from the cache, or from the
// backends, one lookup per header however many callers wait for it.
//
// The cache is keyed by DEK id, so a header that names a known DEK but
// differs from the header it was sealed with by one byte is refused with
// no backend call: tampering with a header costs the attacker, not the
// backends.
func (e *Envelope) dekFor(ctx context.Context, raw []byte) (*dek, error) {
	if d, ok := e.cached(raw); ok {
		e.obs.CacheLookup(true)
		if !bytes.Equal(d.header, raw) {
			return nil, fmt.Errorf("%w: header differs from the one its DEK was sealed with", ErrInvalid)
		}
		e.considerAdoption(d)
		return d, nil
	}
	e.obs.CacheLookup(false)
	h, err := e.parseHeader(raw)
	if err != nil {
		return nil, err
	}
	hash := sha256.Sum256(raw)
	if err := e.failed.recent(hash); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := e.flight.DoChan(string(hash[:]), func() (any, error) {
		// One unwrap serves every caller waiting on this header, so it
		// is not bound to the first caller's deadline: each caller
		// stops waiting at its own, and an unwrap that outlives a
		// caller still fills the cache for the retry. UnwrapTimeout
		// bounds it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.UnwrapTimeout)
		defer cancel()
		release, err := e.unwraps.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		d, err := e.openHeader(ctx, bytes.Clone(raw), h, false)
		var qe *QuorumError
		switch {
		case errors.Is(err, ErrInvalid) && !errors.Is(err, kmsclients.ErrUnavailable):
			e.failed.add(hash, err, failedHeaderTTL)
		case errors.As(err, &qe) && qe.Mismatch && qe.Unanswered > 0:
			// k shares came back and did not fit, and the backends still
			// out did not answer within the grace: tampered, or a liar
			// with an honest backend dark. Retrying may work once that
			// backend is back (a probe that sees a change forgets this),
			// but a replayed header must not hold each caller for the
			// grace again.
			e.failed.add(hash, err, mismatchTTL)
		}
		if err == nil {
			e.considerAdoption(d)
		}
		return d, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*dek), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// parseHeader parses a header as [opener.parse] does: refused below the
// threshold floor.
func (e *Envelope) parseHeader(raw []byte) (*Header, error) { return e.open.parse(raw) }

// cached looks the header's DEK id up without parsing the header.
func (e *Envelope) cached(raw []byte) (*dek, bool) {
	if len(raw) < dekIDOffset+dekIDSize || string(raw[:len(headerMagic)]) != headerMagic {
		return nil, false
	}
	return e.cache.Get([dekIDSize]byte(raw[dekIDOffset : dekIDOffset+dekIDSize]))
}

// openHeader recovers, verifies and caches the DEK of a parsed header.
// With authOnly, only shares that prove who made them are combined.
func (e *Envelope) openHeader(ctx context.Context, raw []byte, h *Header, authOnly bool) (*dek, error) {
	d, err := e.open.open(ctx, raw, h, authOnly)
	if err != nil {
		return nil, err
	}
	e.cache.Add(h.DEKID, d)
	return d, nil
}

// failedHeaders remembers, for a while, headers that could not be opened
// for a reason retrying would not change, and why, so that replaying one
// costs no backend call. Bounded: the oldest are forgotten first.
type failedHeaders struct {
	seen *lru.Cache[[32]byte, failure]
	now  func() time.Time
}

type failure struct {
	at  time.Time
	ttl time.Duration
	err error
}

func newFailedHeaders(size int, now func() time.Time) (*failedHeaders, error) {
	c, err := lru.New[[32]byte, failure](size)
	if err != nil {
		return nil, err
	}
	return &failedHeaders{seen: c, now: now}, nil
}

func (f *failedHeaders) add(hash [32]byte, err error, ttl time.Duration) {
	f.seen.Add(hash, failure{f.now(), ttl, err})
}

// recent returns the error a header failed with, if it failed lately.
func (f *failedHeaders) recent(hash [32]byte) error {
	got, ok := f.seen.Get(hash)
	if ok && f.now().Sub(got.at) >= got.ttl {
		f.seen.Remove(hash)
		return nil
	}
	return got.err
}

// limiter bounds the unwraps in flight. Callers beyond the bound wait for
// a slot; callers beyond four times the bound are refused at once, so a
// flood of distinct headers cannot queue unbounded work.
type limiter struct {
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64
}

func newLimiter(n int) *limiter {
	return &limiter{slots: make(chan struct{}, n), maxWaiting: 4 * int64(n)}
}

func (l *limiter) acquire(ctx context.Context) (release func(), err error) {
	release = func() { <-l.slots }
	select {
	case l.slots <- struct{}{}:
		return release, nil
	default:
	}
	if l.waiting.Add(1) > l.maxWaiting {
		l.waiting.Add(-1)
		return nil, ErrBusy
	}
	defer l.waiting.Add(-1)
	select {
	case l.slots <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
