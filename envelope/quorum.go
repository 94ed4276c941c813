package envelope

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// QuorumError says why a DEK could not be recovered, backend by backend.
// It never holds key material.
type QuorumError struct {
	Threshold int
	Backends  int              // n: backends in the header
	Unwrapped []string         // backends whose shares came back, too few (or not fitting)
	Failures  map[string]error // by backend name
	// Mismatch is set when k or more shares came back but no k of them
	// fit the header's commitment: a lying backend, or a tampered header.
	Mismatch bool
	// Tampered is set when more than k shares agree with each other but
	// not with the header's commitment: the header was tampered with (or
	// that many custodians collude), so no backend is to blame.
	Tampered bool
	// Suspects are the backends caught earlier returning a share that
	// did not fit a DEK: the likely cause of a Mismatch.
	Suspects []string
	// Unanswered counts backends that had not answered when recovery
	// gave up (too few left to reach k, or shares that did not fit).
	Unanswered int
	kind       error
}

func (e *QuorumError) Error() string {
	names := make([]string, 0, len(e.Failures))
	for n := range e.Failures {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s: %v", n, e.Failures[n]))
	}
	msg := fmt.Sprintf("quorum not reached: need %d of %d backends", e.Threshold, e.Backends)
	if len(e.Unwrapped) > 0 {
		msg += fmt.Sprintf(", got shares from %d (%s)", len(e.Unwrapped), strings.Join(e.Unwrapped, ", "))
	}
	if e.Unanswered > 0 {
		msg += fmt.Sprintf("; %d did not answer in time", e.Unanswered)
	}
	switch {
	case e.Tampered:
		msg += "; the shares returned agree with each other but not with the header: the header was tampered with"
	case e.Mismatch:
		msg += "; the shares returned do not combine to the key the header commits to (a backend returned a wrong share, or the header was tampered with)"
	}
	if e.Mismatch && !e.Tampered && len(e.Suspects) > 0 {
		msg += fmt.Sprintf("; backends caught before returning shares that do not fit: %s", strings.Join(e.Suspects, ", "))
	}
	if len(parts) > 0 {
		msg += "; " + strings.Join(parts, "; ")
	}
	return msg
}

// Unwrap makes errors.Is(err, kmsclients.ErrUnavailable) true when
// backends being down explain the failure (retrying later may work), and
// errors.Is(err, ErrInvalid) when they cannot.
func (e *QuorumError) Unwrap() error { return e.kind }

// errPublicWrap: a share wrapped with a public key, not counted as proof
// that Trousseau made the DEK.
var errPublicWrap = errors.New("wrapped with a public key: not proof of who made this DEK")

// newQuorumError explains a failed recovery. unanswered counts backends
// still being asked when recovery gave up: they count as down.
func newQuorumError(ctx context.Context, h *Header, failures map[string]error, unwrapped []string, unanswered int, tampered bool) *QuorumError {
	got := len(unwrapped)
	qe := &QuorumError{Threshold: h.Threshold, Backends: len(h.Shares), Unwrapped: unwrapped, Failures: failures,
		Mismatch: got >= h.Threshold, Tampered: tampered, Unanswered: unanswered}
	// Could the backends that did not answer have made a quorum?
	// A backend named in the header but not configured is neither: the
	// name may have been tampered with, or the operator removed it.
	transient := unanswered
	for _, err := range failures {
		if errors.Is(err, errNotConfigured) || errors.Is(err, errPublicWrap) {
			continue
		}
		// A backend whose key is unusable (ErrInvalidKey) may hold a
		// good share once its key is put back.
		if k := kmsclients.Kind(err); k == "unavailable" || k == "permission" || k == "deadline" || k == "canceled" || k == "other" || errors.Is(err, kmsclients.ErrInvalidKey) {
			transient++
		}
	}
	switch {
	case transient > 0 && ctx.Err() != nil:
		qe.kind = ctx.Err()
	case tampered:
		qe.kind = ErrInvalid
	case qe.Mismatch && transient > 0:
		// Shares did not fit, but a backend that did not answer might
		// have made a fitting set: retrying may work.
		qe.kind = kmsclients.ErrUnavailable
	case !qe.Mismatch && got+transient >= h.Threshold:
		qe.kind = kmsclients.ErrUnavailable
	default:
		qe.kind = ErrInvalid
	}
	return qe
}

// errNotConfigured: the header names a backend this plugin does not have.
var errNotConfigured = errors.New("not configured here")
