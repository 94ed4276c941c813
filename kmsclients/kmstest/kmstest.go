// Package kmstest is the conformance suite that every Trousseau backend
// runs against itself: the behaviour the envelope relies on, checked the
// same way for a key file, a real Vault, local-kms, or a faked Azure vault.
package kmstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Harness makes the backends the suite needs.
type Harness struct {
	// New returns a working backend.
	New func(t *testing.T) kmsclients.Backend
	// OtherKey returns a working backend of the same kind with another key.
	OtherKey func(t *testing.T) kmsclients.Backend
	// Unavailable returns a backend whose server or key is gone.
	Unavailable func(t *testing.T) kmsclients.Backend
	// BackendKind is the backend's kind as the config names it ("vault"),
	// required: every error the suite provokes must be a
	// [kmsclients.Error] naming it, the backend and the operation
	// ("vault vault-eu: unwrap: ...").
	BackendKind string
}

// check says what the harness lacks.
func (h Harness) check() error {
	var missing []string
	if h.New == nil {
		missing = append(missing, "New")
	}
	if h.OtherKey == nil {
		missing = append(missing, "OtherKey")
	}
	if h.Unavailable == nil {
		missing = append(missing, "Unavailable")
	}
	if h.BackendKind == "" {
		missing = append(missing, `BackendKind (the backend's kind as the config names it, "vault")`)
	}
	if len(missing) > 0 {
		return fmt.Errorf("kmstest.Harness: set %s", strings.Join(missing, ", "))
	}
	return nil
}

// callTimeout bounds each call of the suite; backends must honour it.
const callTimeout = 10 * time.Second

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	if err := h.check(); err != nil {
		t.Fatal(err)
	}
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, h.New(t)) })
	t.Run("AssociatedDataMismatch", func(t *testing.T) { testAADMismatch(t, h, h.New(t)) })
	t.Run("TamperedCiphertext", func(t *testing.T) { testTampered(t, h, h.New(t)) })
	t.Run("WrongKey", func(t *testing.T) { testWrongKey(t, h, h.New(t), h.OtherKey(t)) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelled(t, h, h.New(t)) })
	t.Run("Unavailable", func(t *testing.T) { testUnavailable(t, h, h.New(t), h.Unavailable(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h.New(t)) })
}

func randomShare(t testing.TB) []byte {
	b := make([]byte, 36)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wrap wraps a random share and checks what the backend returned.
func wrap(t testing.TB, b kmsclients.Backend, aad []byte) ([]byte, kmsclients.Wrapped) {
	t.Helper()
	share := randomShare(t)
	w, err := b.Wrap(callCtx(t), share, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if err := kmsclients.CheckWrapped(w); err != nil {
		t.Fatalf("Wrap returned %v", err)
	}
	if bytes.Contains(w.Ciphertext, share) {
		t.Fatal("wrapped share contains the share in the clear")
	}
	return share, w
}

// The helpers below are for a backend package's own tests too; each call
// they make is bounded by callTimeout.

// WantKind fails the test unless err is of kind.
func WantKind(t testing.TB, what string, err, kind error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %v", what, kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %q (kind %s), want kind %v", what, err, kmsclients.Kind(err), kind)
	}
}

// WantError fails the test unless err names want or, for an empty want,
// unless err is nil: what a table of configs expects of Validate.
func WantError(t testing.TB, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("%s: %v", what, err)
	case want != "" && err == nil:
		t.Fatalf("%s accepted it, want an error naming %q", what, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("%s: %v, want it to name %q", what, err, want)
	}
}

// MustUnwrap unwraps w with b and fails the test unless that gives want.
func MustUnwrap(t testing.TB, b kmsclients.Backend, w kmsclients.Wrapped, aad, want []byte) {
	t.Helper()
	got, err := b.Unwrap(callCtx(t), w, aad)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Unwrap returned another share")
	}
}

// MustProbe probes b, failing the test on error, and returns the key
// identity it reports.
func MustProbe(t testing.TB, b kmsclients.Backend) string {
	t.Helper()
	id, err := b.Probe(callCtx(t))
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return id
}

// wantShape checks that err, from b's op, has the shape every backend's
// errors have.
func (h Harness) wantShape(t testing.TB, b kmsclients.Backend, op string, err error) {
	t.Helper()
	if err == nil {
		return // wantKind fails it
	}
	prefix := h.BackendKind + " " + b.Name() + ": " + op + ": "
	var e *kmsclients.Error
	if !errors.As(err, &e) || e.Backend != h.BackendKind || e.Name != b.Name() || e.Op != op || !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("%s: error %q is not a *kmsclients.Error that starts %q", op, err, prefix)
	}
}

func testRoundTrip(t *testing.T, b kmsclients.Backend) {
	aad := []byte("dek=1234;share=2")
	share, w := wrap(t, b, aad)
	got, err := b.Unwrap(callCtx(t), w, aad)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, share) {
		t.Fatal("Unwrap returned another share")
	}
	id, err := b.Probe(callCtx(t))
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if id != w.KeyIdentity {
		t.Fatalf("Probe reports key %q, Wrap used %q", id, w.KeyIdentity)
	}
	if err := kmsclients.ValidateName(b.Name()); err != nil {
		t.Fatal(err)
	}
}

func testAADMismatch(t *testing.T, h Harness, b kmsclients.Backend) {
	_, w := wrap(t, b, []byte("dek=1234;share=2"))
	_, err := b.Unwrap(callCtx(t), w, []byte("dek=1234;share=3"))
	WantKind(t, "Unwrap with other associated data", err, kmsclients.ErrInvalidCiphertext)
	h.wantShape(t, b, kmsclients.OpUnwrap, err)
}

func testTampered(t *testing.T, h Harness, b kmsclients.Backend) {
	aad := []byte("aad")
	_, w := wrap(t, b, aad)
	n := len(w.Ciphertext)
	for _, pos := range []int{0, n / 3, n / 2, n - 1} {
		t.Run(fmt.Sprintf("byte%d", pos), func(t *testing.T) {
			bad := w
			bad.Ciphertext = append([]byte(nil), w.Ciphertext...)
			bad.Ciphertext[pos] ^= 0x01
			_, err := b.Unwrap(callCtx(t), bad, aad)
			WantKind(t, "Unwrap of a tampered share", err, kmsclients.ErrInvalidCiphertext)
			h.wantShape(t, b, kmsclients.OpUnwrap, err)
		})
	}
	t.Run("truncated", func(t *testing.T) {
		bad := w
		bad.Ciphertext = w.Ciphertext[:n/2]
		_, err := b.Unwrap(callCtx(t), bad, aad)
		WantKind(t, "Unwrap of a truncated share", err, kmsclients.ErrInvalidCiphertext)
		h.wantShape(t, b, kmsclients.OpUnwrap, err)
	})
}

func testWrongKey(t *testing.T, h Harness, b, other kmsclients.Backend) {
	aad := []byte("aad")
	_, w := wrap(t, b, aad)
	_, err := other.Unwrap(callCtx(t), w, aad)
	if err == nil {
		t.Fatal("a backend with another key unwrapped the share")
	}
	if !errors.Is(err, kmsclients.ErrInvalidCiphertext) && !errors.Is(err, kmsclients.ErrPermission) {
		t.Fatalf("Unwrap with another key: %v (kind %s), want invalid or permission", err, kmsclients.Kind(err))
	}
	h.wantShape(t, other, kmsclients.OpUnwrap, err)
}

func testCancelled(t *testing.T, h Harness, b kmsclients.Backend) {
	aad := []byte("aad")
	_, w := wrap(t, b, aad)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.Wrap(ctx, randomShare(t), aad)
	WantKind(t, "Wrap with a cancelled context", err, context.Canceled)
	h.wantShape(t, b, kmsclients.OpWrap, err)
	_, err = b.Unwrap(ctx, w, aad)
	WantKind(t, "Unwrap with a cancelled context", err, context.Canceled)
	h.wantShape(t, b, kmsclients.OpUnwrap, err)
	_, err = b.Probe(ctx)
	WantKind(t, "Probe with a cancelled context", err, context.Canceled)
	h.wantShape(t, b, kmsclients.OpProbe, err)
}

func testUnavailable(t *testing.T, h Harness, good, down kmsclients.Backend) {
	aad := []byte("aad")
	_, w := wrap(t, good, aad)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s on an unavailable backend succeeded", what)
		}
		if !errors.Is(err, kmsclients.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: %v (kind %s), want unavailable", what, err, kmsclients.Kind(err))
		}
	}
	_, err := down.Wrap(ctx, randomShare(t), aad)
	check("Wrap", err)
	h.wantShape(t, down, kmsclients.OpWrap, err)
	_, err = down.Unwrap(ctx, w, aad)
	check("Unwrap", err)
	h.wantShape(t, down, kmsclients.OpUnwrap, err)
	_, err = down.Probe(ctx)
	check("Probe", err)
	h.wantShape(t, down, kmsclients.OpProbe, err)
}

func testConcurrent(t *testing.T, b kmsclients.Backend) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			aad := fmt.Appendf(nil, "share=%d", i)
			share := randomShare(t)
			w, err := b.Wrap(callCtx(t), share, aad)
			if err != nil {
				errs <- err
				return
			}
			got, err := b.Unwrap(callCtx(t), w, aad)
			if err == nil && !bytes.Equal(got, share) {
				err = errors.New("concurrent round trip returned another share")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
