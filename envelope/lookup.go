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
	"golang.org/x/sync/singleflight"

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

// lookup finds the DEK of a header: in the cache, else from the [opener],
// one unwrap per header however many callers wait for it, within a bound
// on unwraps in flight. Headers that failed for good are refused for a
// while without asking the backends. Each part locks itself.
type lookup struct {
	open *opener
	// cache is keyed by DEK id, so a header that names a known DEK but
	// differs from the one it was sealed with is refused with no backend
	// call: tampering with a header costs the attacker, not the backends.
	cache   *lru.Cache[[dekIDSize]byte, *dek]
	failed  *failedHeaders
	unwraps *limiter
	flight  singleflight.Group
	timeout time.Duration // bounds one unwrap, however many wait on it
	obs     Observer
}

func newLookup(cfg Config, open *opener, obs Observer) (*lookup, error) {
	cache, err := lru.New[[dekIDSize]byte, *dek](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	failed, err := newFailedHeaders(cfg.CacheSize, cfg.Now)
	if err != nil {
		return nil, err
	}
	return &lookup{open: open, cache: cache, failed: failed, unwraps: newLimiter(cfg.MaxUnwraps), timeout: cfg.UnwrapTimeout, obs: obs}, nil
}

// find returns the DEK that raw wraps.
func (l *lookup) find(ctx context.Context, raw []byte) (*dek, error) {
	if d, ok := l.cached(raw); ok {
		l.obs.CacheLookup(true)
		if !bytes.Equal(d.header, raw) {
			return nil, fmt.Errorf("%w: header differs from the one its DEK was sealed with", ErrInvalid)
		}
		return d, nil
	}
	l.obs.CacheLookup(false)
	h, err := l.open.parse(raw)
	if err != nil {
		return nil, err
	}
	hash := sha256.Sum256(raw)
	if err := l.failed.recent(hash); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// One unwrap serves every caller waiting on this header, so it is not
	// bound to the first caller's deadline: each stops waiting at its
	// own, and an unwrap that outlives a caller still fills the cache.
	own := bytes.Clone(raw) // the flight may outlive the caller
	ch := l.flight.DoChan(string(hash[:]), func() (any, error) {
		// A flight that ended since the cache was read has filled it.
		if d, ok := l.cached(own); ok && bytes.Equal(d.header, own) {
			return d, nil
		}
		return l.unwrap(context.WithoutCancel(ctx), own, h, hash)
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

// unwrap opens h within the unwrap bound and caches the DEK, or
// remembers why it failed.
func (l *lookup) unwrap(ctx context.Context, raw []byte, h *Header, hash [32]byte) (*dek, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	release, err := l.unwraps.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	d, err := l.open.open(ctx, raw, h, false)
	var qe *QuorumError
	switch {
	case err == nil:
		l.add(d)
	case errors.Is(err, ErrInvalid) && !errors.Is(err, kmsclients.ErrUnavailable):
		l.failed.add(hash, err, failedHeaderTTL)
	case errors.As(err, &qe) && qe.Mismatch && qe.Unanswered > 0:
		// k shares did not fit while a backend that might have fitted
		// was out: retrying may work once it is back (a probe that sees
		// a change forgets this), but a replayed header must not hold
		// each caller for the grace again.
		l.failed.add(hash, err, mismatchTTL)
	}
	return d, err
}

// cached looks the header's DEK id up without parsing the header.
func (l *lookup) cached(raw []byte) (*dek, bool) {
	if len(raw) < dekIDOffset+dekIDSize || string(raw[:len(headerMagic)]) != headerMagic {
		return nil, false
	}
	return l.cache.Get([dekIDSize]byte(raw[dekIDOffset : dekIDOffset+dekIDSize]))
}

// add caches d, replacing any DEK of the same id.
func (l *lookup) add(d *dek) { l.cache.Add(d.parsed.DEKID, d) }

// forgetFailures forgets every failed header: a backend's key changed
// (a key file put back, a key restored), so they may open now.
func (l *lookup) forgetFailures() { l.failed.seen.Purge() }

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
