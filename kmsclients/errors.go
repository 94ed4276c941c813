package kmsclients

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error kinds, for errors.Is; the gRPC server and metrics sort by them.
var (
	// ErrUnavailable: unreachable or too slow; retrying may work.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrPermission: refused (credentials, policy); an operator must act.
	ErrPermission = errors.New("permission denied")
	// ErrInvalidCiphertext: corrupt, tampered, another key or aad.
	ErrInvalidCiphertext = errors.New("invalid ciphertext")
	// ErrInvalidKey: the backend's key is no key (wrong length); its
	// shares may be intact.
	ErrInvalidKey = errors.New("invalid key")
)

// kinds in the order Kind tries them: a finished context first, so the
// caller sees its own deadline or cancellation whatever the backend said.
var kinds = []struct {
	err  error
	name string
}{
	{context.DeadlineExceeded, "deadline"},
	{context.Canceled, "canceled"},
	{ErrUnavailable, "unavailable"},
	{ErrPermission, "permission"},
	{ErrInvalidCiphertext, "invalid"},
	{ErrInvalidKey, "invalid"},
}

// Kind names err's kind for logs and metric labels: "ok", "unavailable",
// "permission", "invalid", "canceled", "deadline" or "other".
func Kind(err error) string {
	if err == nil {
		return "ok"
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

// kindOf is the first of kinds that err is, or nil.
func kindOf(err error) error {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.err
		}
	}
	return nil
}

// Operations, as errors and metrics name them.
const (
	OpWrap   = "wrap"
	OpUnwrap = "unwrap"
	OpProbe  = "probe"
)

// Error is every backend's error, reading "<backend> <name>: <op>:
// <cause>". The kind is logged beside, not written out (unless a context
// overrode it): "permission denied" would send the operator to chmod.
type Error struct {
	Backend string // the kind, as the config names it: "vault"
	Name    string // empty when invalid, which the cause says
	Op      string // OpWrap, OpUnwrap, OpProbe; empty for New
	Kind    error  // one of the Err* kinds, a context error, or nil
	// Err is the cause; it never holds a share, key, token or secret.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Backend)
	if e.Name != "" {
		b.WriteString(" " + e.Name)
	}
	b.WriteString(": ")
	if e.Op != "" {
		b.WriteString(e.Op + ": ")
	}
	switch {
	case e.Err == nil && e.Kind == nil:
		b.WriteString("failed")
	case e.Err == nil:
		b.WriteString(e.Kind.Error())
	case e.overridden():
		b.WriteString(e.Kind.Error() + ": " + e.Err.Error())
	default:
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// overridden: a context kind replaced the cause's, so the text says so.
func (e *Error) overridden() bool {
	isContext := errors.Is(e.Kind, context.Canceled) || errors.Is(e.Kind, context.DeadlineExceeded)
	return isContext && !errors.Is(e.Err, e.Kind)
}

// Unwrap returns the kind and the cause.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	for _, err := range []error{e.Kind, e.Err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Source makes one backend's errors.
type Source struct {
	Backend string // the kind, as the config names it
	Name    string // the backend's name in the config
}

// Errorf returns an error the backend found itself, of kind (nil: a %w
// argument's).
func (s Source) Errorf(op string, kind error, format string, args ...any) error {
	return s.newError(op, kind, fmt.Errorf(format, args...))
}

// Fail returns the error of a failed KMS call, of kind (nil: err's). A
// done ctx is the kind whatever the call said, counting a passed deadline
// before ctx.Err() does (gRPC's own timer can fire first). Pass the
// caller's ctx, not a per-call timeout.
func (s Source) Fail(ctx context.Context, op string, kind, err error) error {
	if cerr := done(ctx); cerr != nil {
		kind = cerr
	}
	return s.newError(op, kind, err)
}

func done(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (s Source) newError(op string, kind, err error) *Error {
	if kind == nil {
		kind = kindOf(err)
	}
	return &Error{Backend: s.Backend, Name: s.Name, Op: op, Kind: kind, Err: err}
}

// CheckNew is what every backend's New checks first: the name, then cfg.
func (s Source) CheckNew(cfg interface{ Validate() error }) error {
	if err := ValidateName(s.Name); err != nil {
		// No Name: the cause quotes the bad one.
		return &Error{Backend: s.Backend, Err: err}
	}
	if err := cfg.Validate(); err != nil {
		return s.newError("", nil, err)
	}
	return nil
}

// Summarize returns an error reading summary and wrapping the non-nil
// errs: an SDK's text may span lines and repeat the request.
func Summarize(summary string, errs ...error) error {
	s := &summarized{text: summary}
	for _, err := range errs {
		if err != nil {
			s.errs = append(s.errs, err)
		}
	}
	return s
}

type summarized struct {
	text string
	errs []error
}

func (s *summarized) Error() string   { return s.text }
func (s *summarized) Unwrap() []error { return s.errs }
