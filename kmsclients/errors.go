package kmsclients

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error kinds. Backends wrap their errors so that errors.Is reports one of
// these; the gRPC server maps them to status codes, metrics count them.
var (
	// ErrUnavailable: the backend could not be reached or did not answer in
	// time (network, throttling, server error, missing key file). Retrying
	// later may work.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrPermission: the backend answered but refused (credentials,
	// policy, disabled key). Retrying will not help until an operator acts.
	ErrPermission = errors.New("permission denied")
	// ErrInvalidCiphertext: the wrapped share is corrupt, was tampered
	// with, was wrapped under another key, or its associated data differs.
	ErrInvalidCiphertext = errors.New("invalid ciphertext")
	// ErrInvalidKey: the backend's own key is there but is no key (a key
	// file of the wrong length, a directory). Retrying will not help until
	// an operator replaces it; the shares it wrapped may be intact.
	ErrInvalidKey = errors.New("invalid key")
)

// kinds are the kinds an error can be of, in the order Kind tries them:
// a finished context first, so that a caller's own deadline or
// cancellation is what it sees, whatever the backend made of it.
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

// Kind names the kind of err for logs and metric labels: "ok",
// "unavailable", "permission", "invalid", "canceled", "deadline" or "other".
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

// Error is what every backend returns: which backend failed, in which
// operation, the kind of failure, and its cause. Its text is
// "<backend> <name>: <op>: <cause>" ("vault vault-eu: unwrap: ..."), the
// shape the docs promise, made here so that no backend types it; an error
// of New has no op, and one for an invalid name no name ("vault: invalid
// backend name ...").
//
// The kind is not written out (logs, metrics and `config check` give it
// beside the text), except a finished context's that overrode what the
// cause says. A key file's fault, say, is of kind permission but reads
// as what is wrong with the file, not as "permission denied", which
// would send the operator to chmod.
type Error struct {
	Backend string // the backend's kind, as the config names it: "vault", "awskms", ...
	Name    string // the backend's name in the config; empty when it is invalid, which the cause says
	Op      string // OpWrap, OpUnwrap or OpProbe; empty for an error of New
	// Kind is ErrUnavailable, ErrPermission, ErrInvalidCiphertext, a
	// context error, or nil for none of them.
	Kind error
	// Err is the cause. Like every error of a backend, it never holds a
	// share, a key, a token or a secret.
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

// overridden reports a context error that took the place of the kind the
// cause has: the text must say why the kind is not what it reads as.
func (e *Error) overridden() bool {
	isContext := errors.Is(e.Kind, context.Canceled) || errors.Is(e.Kind, context.DeadlineExceeded)
	return isContext && !errors.Is(e.Err, e.Kind)
}

// Unwrap returns the kind and the cause, so that errors.Is finds either.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	for _, err := range []error{e.Kind, e.Err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Source makes the errors of one backend: a backend keeps one, made from
// its kind and name in New.
type Source struct {
	Backend string // the backend's kind, as the config names it
	Name    string // the backend's name in the config
}

// Errorf returns an error of op that the backend found itself (a share it
// refuses, an answer it does not trust), of kind; a nil kind is the one
// the cause (a %w argument) has, if any.
func (s Source) Errorf(op string, kind error, format string, args ...any) error {
	return s.newError(op, kind, fmt.Errorf(format, args...))
}

// Fail returns the error of op, whose call to the KMS failed with err,
// of kind (nil: err's own, if any). When ctx is done, its error is the
// kind whatever the call made of it (a reset connection, an SDK's retry
// error): the caller's cancellation or deadline is what happened.
//
// A deadline of ctx that has passed makes ctx done here even while
// ctx.Err() is still nil: a transport that enforces the deadline itself
// (gRPC sends it and arms its own timer) can fail the call a moment
// before ctx's own timer marks ctx done, and that failure is the
// caller's deadline all the same. A backend's own per-call timeout, on a
// context derived from ctx, is not ctx's deadline: Fail is given ctx.
func (s Source) Fail(ctx context.Context, op string, kind, err error) error {
	if cerr := done(ctx); cerr != nil {
		kind = cerr
	}
	return s.newError(op, kind, err)
}

// done is ctx's error, or context.DeadlineExceeded when ctx's deadline
// has passed and ctx does not say so yet.
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

// CheckNew checks what every backend's New checks first: its name, then
// its config block, whose errors name the field at fault.
func (s Source) CheckNew(cfg interface{ Validate() error }) error {
	if err := ValidateName(s.Name); err != nil {
		// The name is what is wrong: the cause quotes it, and the text
		// reads "<backend>: invalid backend name ...".
		return &Error{Backend: s.Backend, Err: err}
	}
	if err := cfg.Validate(); err != nil {
		return s.newError("", nil, err)
	}
	return nil
}

// Summarize returns an error whose text is summary and that wraps errs
// (nil ones left out), for errors.Is and errors.As. An SDK's error text
// may span lines and repeat the request it failed on (URL, headers);
// summary is the one line of it worth logging.
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
