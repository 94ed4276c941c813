package kmsclients

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"
)

// TestErrorText: errors read "<backend> <name>: <op>: <cause>", naming a
// context's kind only where it overrode the cause's.
func TestErrorText(t *testing.T) {
	src := Source{Backend: "vault", Name: "vault-eu"}
	live := context.Background()
	done, cancel := context.WithCancel(live)
	cancel()
	reset := fmt.Errorf("%w: read tcp: connection reset", ErrUnavailable)
	for _, tc := range []struct {
		name     string
		err      error
		want     string
		wantKind string
	}{
		{"found by the backend", src.Errorf(OpUnwrap, ErrInvalidCiphertext, "malformed wrapped share"), "vault vault-eu: unwrap: malformed wrapped share", "invalid"},
		{"kind from the cause", src.Errorf(OpProbe, nil, "key %s: %w", "k", ErrPermission), "vault vault-eu: probe: key k: permission denied", "permission"},
		{"no kind", src.Errorf(OpWrap, nil, "Vault answered without a ciphertext"), "vault vault-eu: wrap: Vault answered without a ciphertext", "other"},
		{"kind not written out", src.Errorf(OpProbe, ErrPermission, "key file /k has mode 0644"), "vault vault-eu: probe: key file /k has mode 0644", "permission"},
		{"call failed", src.Fail(live, OpWrap, nil, reset), "vault vault-eu: wrap: backend unavailable: read tcp: connection reset", "unavailable"},
		{"call failed, kind given", src.Fail(live, OpWrap, ErrPermission, errors.New("AccessDenied")), "vault vault-eu: wrap: AccessDenied", "permission"},
		{"context wins", src.Fail(done, OpWrap, nil, reset), "vault vault-eu: wrap: context canceled: backend unavailable: read tcp: connection reset", "canceled"},
		{"context wins over a given kind", src.Fail(done, OpUnwrap, ErrInvalidCiphertext, errors.New("HTTP 400")), "vault vault-eu: unwrap: context canceled: HTTP 400", "canceled"},
		{"context said once", src.Fail(done, OpProbe, nil, done.Err()), "vault vault-eu: probe: context canceled", "canceled"},
		{"error of New", src.Errorf("", nil, "vault.caFile: %w", fs.ErrNotExist), "vault vault-eu: vault.caFile: file does not exist", "other"},
		{"no cause", &Error{Backend: "local", Name: "a", Op: OpWrap, Kind: ErrUnavailable}, "local a: wrap: backend unavailable", "unavailable"},
		{"nothing", &Error{Backend: "local", Name: "a", Op: OpWrap}, "local a: wrap: failed", "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("text %q, want %q", got, tc.want)
			}
			if got := Kind(tc.err); got != tc.wantKind {
				t.Errorf("kind %s, want %s", got, tc.wantKind)
			}
		})
	}
}

// lateContext's deadline has passed while Err is still nil, as when
// gRPC's own timer fails a call before the context's fires.
type lateContext struct {
	context.Context
	deadline time.Time
}

func (c lateContext) Deadline() (time.Time, bool) { return c.deadline, true }

// TestFailDeadlinePassed: a passed deadline is the kind before ctx.Err()
// says so; one ahead leaves the kind to the call; cancellation wins.
func TestFailDeadlinePassed(t *testing.T) {
	src := Source{Backend: "kmsplugin", Name: "aws"}
	grpcTimeout := fmt.Errorf("gRPC DeadlineExceeded: %w", errors.New("context deadline exceeded"))
	past, ahead := time.Now().Add(-time.Millisecond), time.Now().Add(time.Hour)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		kind     error
		want     string
		wantKind string
	}{
		{"passed, Err not yet set", lateContext{context.Background(), past}, ErrUnavailable, "kmsplugin aws: wrap: context deadline exceeded: gRPC DeadlineExceeded: context deadline exceeded", "deadline"},
		{"passed, no kind given", lateContext{context.Background(), past}, nil, "kmsplugin aws: wrap: context deadline exceeded: gRPC DeadlineExceeded: context deadline exceeded", "deadline"},
		{"ahead: the backend's own timeout", lateContext{context.Background(), ahead}, ErrUnavailable, "kmsplugin aws: wrap: gRPC DeadlineExceeded: context deadline exceeded", "unavailable"},
		{"passed, but cancelled first", lateContext{cancelled, past}, ErrUnavailable, "kmsplugin aws: wrap: context canceled: gRPC DeadlineExceeded: context deadline exceeded", "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ctx.Err() != nil && tc.wantKind == "deadline" {
				t.Fatal("test setup: the context says it is done")
			}
			err := src.Fail(tc.ctx, OpWrap, tc.kind, grpcTimeout)
			if got := err.Error(); got != tc.want {
				t.Errorf("text %q, want %q", got, tc.want)
			}
			if got := Kind(err); got != tc.wantKind {
				t.Errorf("kind %s, want %s", got, tc.wantKind)
			}
		})
	}
	// Errorf, what the backend found itself, keeps its kind.
	if err := src.Errorf(OpUnwrap, ErrInvalidCiphertext, "binding does not match"); Kind(err) != "invalid" {
		t.Errorf("Errorf: kind %s", Kind(err))
	}
}

// TestErrorUnwrapsKindAndCause: errors.Is and errors.As reach both.
func TestErrorUnwrapsKindAndCause(t *testing.T) {
	cause := &fs.PathError{Op: "open", Path: "/k", Err: fs.ErrNotExist}
	err := Source{Backend: "local", Name: "a"}.Errorf(OpProbe, ErrUnavailable, "key file: %w", cause)
	var pe *fs.PathError
	var e *Error
	switch {
	case !errors.Is(err, ErrUnavailable):
		t.Error("kind not reached")
	case !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe):
		t.Error("cause not reached")
	case !errors.As(err, &e) || e.Backend != "local" || e.Name != "a" || e.Op != OpProbe || e.Kind != ErrUnavailable:
		t.Errorf("errors.As gave %+v", e)
	}
}

// TestKindOrder: a finished context wins, then unavailable, permission,
// invalid.
func TestKindOrder(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{errors.New("x"), "other"},
		{errors.Join(ErrInvalidCiphertext, context.Canceled), "canceled"},
		{errors.Join(context.Canceled, context.DeadlineExceeded), "deadline"},
		{errors.Join(ErrPermission, ErrUnavailable), "unavailable"},
		{errors.Join(ErrInvalidCiphertext, ErrPermission), "permission"},
		{ErrInvalidCiphertext, "invalid"},
	} {
		if got := Kind(tc.err); got != tc.want {
			t.Errorf("Kind(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// TestCheckNew: New's errors (name, then config) are *Error naming the
// backend (and the name once valid), with no op and no kind.
func TestCheckNew(t *testing.T) {
	for _, tc := range []struct {
		name, backend string
		cfg           error // what the config's Validate says
		want          string
		wantName      string // Error.Name
	}{
		{"valid", "vault-eu", nil, "", ""},
		{"bad name", "Vault_EU", nil, `vault: invalid backend name "Vault_EU": want 1 to 63 characters`, ""},
		{"empty name", "", nil, `vault: invalid backend name "": want`, ""},
		{"bad name and config", "Vault_EU", errors.New("vault.keyName: required"), `vault: invalid backend name "Vault_EU"`, ""},
		{"bad config", "vault-eu", errors.New("vault.keyName: required"), "vault vault-eu: vault.keyName: required", "vault-eu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Source{Backend: "vault", Name: tc.backend}.CheckNew(validator{tc.cfg})
			if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if err == nil {
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%v (%T) is not a *Error", err, err)
			}
			if e.Backend != "vault" || e.Name != tc.wantName || e.Op != "" || e.Kind != nil || e.Err == nil {
				t.Errorf("got %+v, want backend vault, name %q, no op, no kind, a cause", *e, tc.wantName)
			}
			if Kind(err) != "other" {
				t.Errorf("Kind = %s, want other: a config error is none of the backend kinds", Kind(err))
			}
		})
	}
}

type validator struct{ err error }

func (v validator) Validate() error { return v.err }

func TestSummarize(t *testing.T) {
	sdk := fmt.Errorf("PUT https://vault.example/v1/transit/decrypt/k\nCode: 403\n%w", fs.ErrPermission)
	err := Summarize("HTTP 403: permission denied", ErrPermission, nil, sdk)
	if err.Error() != "HTTP 403: permission denied" || strings.Contains(err.Error(), "\n") {
		t.Errorf("text %q", err)
	}
	if !errors.Is(err, ErrPermission) || !errors.Is(err, fs.ErrPermission) {
		t.Error("wrapped errors not reached")
	}
}
