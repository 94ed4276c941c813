package envelope

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// QuorumError says, backend by backend, why a DEK could not be
// recovered. It never holds key material.
type QuorumError struct {
	Threshold int
	Backends  int              // n
	Unwrapped []string         // whose shares came back
	Failures  map[string]error // by backend
	Mismatch  bool             // k shares came back, no k fit: a liar or tampering
	// Tampered: more than k shares agree, but not with the header, so no
	// backend is to blame.
	Tampered   bool
	Suspects   []string // caught before returning shares that did not fit
	Unanswered int      // still out when recovery gave up
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

// Unwrap is [kmsclients.ErrUnavailable] when backends being down explain
// the failure (a retry may work), [ErrInvalid] when they cannot, or the
// context's error.
func (e *QuorumError) Unwrap() error { return e.kind }

// errPublicWrap: a public-key share proves nothing of who made the DEK.
var errPublicWrap = errors.New("wrapped with a public key: not proof of who made this DEK")

// newQuorumError explains a failed recovery; unanswered backends count
// as down.
func newQuorumError(ctx context.Context, h *Header, failures map[string]error, unwrapped []string, unanswered int, tampered bool) *QuorumError {
	got := len(unwrapped)
	qe := &QuorumError{Threshold: h.Threshold, Backends: len(h.Shares), Unwrapped: unwrapped, Failures: failures,
		Mismatch: got >= h.Threshold, Tampered: tampered, Unanswered: unanswered}
	// Could the silent backends have made a quorum? One not configured
	// cannot: its name may be tampered with, or it was removed.
	transient := unanswered
	for _, err := range failures {
		if errors.Is(err, errNotConfigured) || errors.Is(err, errPublicWrap) {
			continue
		}
		// ErrInvalidKey: may work once its key is put back.
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
		// A silent backend might have made a fitting set.
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
