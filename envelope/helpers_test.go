package envelope

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Test doubles around real local backends: they change when and what a
// backend answers, never how shares are wrapped.

// newLocal makes a real key-file backend in dir.
func newLocal(t testing.TB, dir, name string) *local.Backend {
	t.Helper()
	path := filepath.Join(dir, name+".key")
	if err := local.GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := local.New(context.Background(), name, local.Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newLocals makes n key-file backends named b1..bn.
func newLocals(t testing.TB, n int) []kmsclients.Backend {
	dir := t.TempDir()
	out := make([]kmsclients.Backend, n)
	for i := range out {
		out[i] = newLocal(t, dir, fmt.Sprintf("b%d", i+1))
	}
	return out
}

// switchable can be taken down and brought back; it counts calls.
type switchable struct {
	kmsclients.Backend
	down   atomic.Bool
	hang   atomic.Bool // when down: block until the context ends instead of failing fast
	delay  atomic.Int64
	calls  atomic.Int64
	cancel atomic.Int64 // calls that ended because their context was cancelled

	mu      sync.Mutex
	wrapped [][]byte // every share it was asked to wrap (for the no-secrets test)
}

func wrapSwitchable(bs []kmsclients.Backend) []*switchable {
	out := make([]*switchable, len(bs))
	for i, b := range bs {
		out[i] = &switchable{Backend: b}
	}
	return out
}

func asBackends(ss []*switchable) []kmsclients.Backend {
	out := make([]kmsclients.Backend, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (s *switchable) gate(ctx context.Context) error {
	s.calls.Add(1)
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			s.cancel.Add(1)
			return ctx.Err()
		}
	}
	if !s.down.Load() {
		return nil
	}
	if s.hang.Load() {
		<-ctx.Done()
		s.cancel.Add(1)
		return ctx.Err()
	}
	return fmt.Errorf("%s: switched off: %w", s.Name(), kmsclients.ErrUnavailable)
}

func (s *switchable) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if err := s.gate(ctx); err != nil {
		return kmsclients.Wrapped{}, err
	}
	s.mu.Lock()
	s.wrapped = append(s.wrapped, append([]byte(nil), share...))
	s.mu.Unlock()
	return s.Backend.Wrap(ctx, share, aad)
}

func (s *switchable) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	return s.Backend.Unwrap(ctx, w, aad)
}

func (s *switchable) Probe(ctx context.Context) (string, error) {
	if err := s.gate(ctx); err != nil {
		return "", err
	}
	return s.Backend.Probe(ctx)
}

// liar unwraps correctly, then changes one byte of the share's value:
// well framed, wrong content.
type liar struct{ kmsclients.Backend }

func (l liar) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	share, err := l.Backend.Unwrap(ctx, w, aad)
	if err == nil {
		share[5] ^= 0x40
	}
	return share, err
}

type countingObserver struct {
	hits, misses, rotations, rotationFailures atomic.Int64
	calls, unusable, adopted                  atomic.Int64
}

func (o *countingObserver) BackendCall(string, string, error, time.Duration) { o.calls.Add(1) }
func (o *countingObserver) CacheLookup(hit bool) {
	if hit {
		o.hits.Add(1)
	} else {
		o.misses.Add(1)
	}
}
func (o *countingObserver) DEKUnusable() { o.unusable.Add(1) }
func (o *countingObserver) Adopted()     { o.adopted.Add(1) }

func (o *countingObserver) Rotation(err error) {
	if err != nil {
		o.rotationFailures.Add(1)
	} else {
		o.rotations.Add(1)
	}
}

func mustNew(t testing.TB, cfg Config) *Envelope {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Prepare(context.Background()); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return e
}

func mustEncrypt(t testing.TB, e *Envelope, pt []byte) Sealed {
	t.Helper()
	s, err := e.Encrypt(pt)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// chooseSubsets calls f with every size-subset of {0..n-1} until f returns false.
func chooseSubsets(n, size int, f func([]int) bool) {
	idx := make([]int, 0, size)
	var rec func(start int) bool
	rec = func(start int) bool {
		if len(idx) == size {
			return f(idx)
		}
		for i := start; i <= n-(size-len(idx)); i++ {
			idx = append(idx, i)
			if !rec(i + 1) {
				return false
			}
			idx = idx[:len(idx)-1]
		}
		return true
	}
	rec(0)
}
