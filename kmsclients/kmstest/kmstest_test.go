package kmstest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// recorder is a testing.TB that records whether Errorf was called.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(string, ...any)     { r.failed = true }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...) }

type named string

func (n named) Name() string { return string(n) }
func (named) Wrap(context.Context, []byte, []byte) (kmsclients.Wrapped, error) {
	return kmsclients.Wrapped{}, nil
}
func (named) Unwrap(context.Context, kmsclients.Wrapped, []byte) ([]byte, error) { return nil, nil }
func (named) Probe(context.Context) (string, error)                              { return "", nil }
func (named) Close() error                                                       { return nil }

// TestWantShape: the suite refuses an error that is not a
// *kmsclients.Error of the backend and operation, when asked to check.
func TestWantShape(t *testing.T) {
	src := kmsclients.Source{Backend: "toy", Name: "toy-a"}
	good := src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "malformed")
	for _, tc := range []struct {
		name string
		kind string
		err  error
		fail bool
	}{
		{"an Error of the backend and op", "toy", good, false},
		{"wrapped further", "toy", fmt.Errorf("envelope: %w", good), true},
		{"bare context error", "toy", context.Canceled, true},
		{"hand-typed prefix", "toy", fmt.Errorf("toy toy-a: unwrap: %w", kmsclients.ErrInvalidCiphertext), true},
		{"another op", "toy", src.Errorf(kmsclients.OpProbe, nil, "x"), true},
		{"another kind", "other", good, true},
		{"another backend", "toy", kmsclients.Source{Backend: "toy", Name: "toy-b"}.Errorf(kmsclients.OpUnwrap, nil, "x"), true},
		{"no kind to check against", "", good, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			Harness{BackendKind: tc.kind}.wantShape(r, named("toy-a"), kmsclients.OpUnwrap, tc.err)
			if r.failed != tc.fail {
				t.Fatalf("failed %v, want %v", r.failed, tc.fail)
			}
		})
	}
}

// TestHarnessIsComplete: the suite refuses a harness without every part,
// the backend's kind included.
func TestHarnessIsComplete(t *testing.T) {
	backend := func(*testing.T) kmsclients.Backend { return named("toy-a") }
	full := Harness{New: backend, OtherKey: backend, Unavailable: backend, BackendKind: "toy"}
	if err := full.check(); err != nil {
		t.Fatalf("a complete harness: %v", err)
	}
	noKind := full
	noKind.BackendKind = ""
	if err := noKind.check(); err == nil || !strings.Contains(err.Error(), "BackendKind") {
		t.Fatalf("a harness without BackendKind: %v", err)
	}
	if err := (Harness{BackendKind: "toy"}).check(); err == nil || !strings.Contains(err.Error(), "New, OtherKey, Unavailable") {
		t.Fatalf("a harness without backends: %v", err)
	}
}
