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
	DefaultUnwrapTimeout = 30 * time.Second // see [Config.UnwrapTimeout]
	DefaultMaxUnwraps    = 16               // see [Config.MaxUnwraps]
	// How long a failed header is refused without asking: failed for
	// good, or shares did not fit while a backend was out.
	failedHeaderTTL = 5 * time.Minute
	mismatchTTL     = 30 * time.Second
)

// ErrBusy reports that too many DEK unwraps are already waiting.
var ErrBusy = fmt.Errorf("too many DEK unwraps in progress: %w", kmsclients.ErrUnavailable)

// dekIDOffset: magic, version, k, n, generation, created.
const dekIDOffset = len(headerMagic) + 1 + 1 + 1 + 4 + 8

// lookup finds a header's DEK: in the cache, else one [opener] unwrap per
// header however many wait, within a bound on unwraps in flight; failed
// headers are refused for a while. Each part locks itself.
type lookup struct {
	open *opener
	// By DEK id: a tampered copy of a known header costs no backend call.
	cache   *lru.Cache[[dekIDSize]byte, *dek]
	failed  *failedHeaders
	unwraps *limiter
	flight  singleflight.Group
	timeout time.Duration
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
	// The unwrap serves every waiter, so it ignores the first caller's
	// deadline and, outliving it, still fills the cache.
	own := bytes.Clone(raw) // the flight may outlive the caller
	ch := l.flight.DoChan(string(hash[:]), func() (any, error) {
		// A flight may have ended since the cache was read.
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

// unwrap opens h within the bounds and caches the DEK, or remembers why
// it failed.
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
		// May open once the backend is back, but a replay must not hold
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

// forgetFailures: a backend's key changed, so failed headers may open now.
func (l *lookup) forgetFailures() { l.failed.seen.Purge() }

// failedHeaders remembers, for a while, headers that failed and why, so
// that a replay costs no backend call. An LRU: bounded.
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

// limiter bounds unwraps in flight; past four times as many waiting it
// refuses, so a flood of distinct headers cannot queue unbounded work.
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
