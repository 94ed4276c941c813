package envelope

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
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

type shareResult struct {
	backend string
	share   split.Share
	err     error
}

// recoverDEK asks every backend of the header for its share at once and
// returns the DEK as soon as k shares combine to the committed key. Slow
// or dead backends cost nothing once a quorum has answered: their calls
// are cancelled. With authOnly, shares from backends that wrap with a
// public key are not asked for (see unlockCurrent).
//
// It also gives up early. Once too few backends are left to make k good
// shares, or k shares are in and no k of them fit the commitment (a
// backend lied, or the header was tampered with), the backends still out
// get as long again as recovery has taken so far, not the whole deadline:
// a tampered header cannot hold a caller as long as a dead backend can.
//
// authenticated reports whether the shares that made the DEK all came from
// backends that wrap with a secret key (proof that a custodian made it).
func (e *Envelope) recoverDEK(ctx context.Context, h *Header, raw []byte, authOnly bool) (key []byte, authenticated bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	results := make(chan shareResult, len(h.Shares))
	failures := map[string]error{}
	out := map[string]bool{} // backends asked that have not answered
	for _, ws := range h.Shares {
		if authOnly && e.backends[ws.Backend] != nil && kmsclients.IsPublicWrap(e.backends[ws.Backend]) {
			failures[ws.Backend] = errPublicWrap
			continue
		}
		out[ws.Backend] = true
		go func() { results <- e.unwrapShare(ctx, h, ws) }()
	}
	pending := len(out)
	var good []split.Share
	defer func() {
		for _, s := range good {
			s.Wipe()
		}
	}()
	var grace <-chan time.Time
	tampered, finalDone := false, false
	for pending > 0 {
		if grace == nil {
			grace = graceFor(h.Threshold, len(good), pending, time.Since(start), e.anyBelievedUp(out))
		}
		select {
		case r := <-results:
			pending--
			delete(out, r.backend)
			if r.err != nil {
				failures[r.backend] = r.err
				continue
			}
			good = append(good, r.share)
			found, err := e.combine(ctx, h, raw, good, pending == 0)
			finalDone = pending == 0
			switch {
			case err != nil:
				pending = 0
			case found.Secret != nil:
				return found.Secret, e.secretKeyShares(h, found.Fit), nil
			case len(found.Agree) >= split.TamperedQuorum(h.Threshold):
				e.log.Debug("shares agree with each other but not with the header: tampered", "agreeing", len(found.Agree))
				tampered, pending = true, 0
			}
		case <-grace:
			e.log.Debug("no quorum can be made from the shares in; not waiting longer for the remaining backends", "pending", pending)
			pending = 0
		}
	}
	// No more shares will come: the DEK may still be among polynomials
	// through exactly k of those in, left out while more could come.
	if !finalDone && !tampered && ctx.Err() == nil {
		if found, err := e.combine(ctx, h, raw, good, true); err == nil && found.Secret != nil {
			return found.Secret, e.secretKeyShares(h, found.Fit), nil
		}
	}
	var unwrapped []string
	for _, s := range good {
		unwrapped = append(unwrapped, h.Shares[s.Index-1].Backend)
	}
	sort.Strings(unwrapped)
	qe := newQuorumError(ctx, h, failures, unwrapped, len(h.Shares)-len(failures)-len(good), tampered)
	qe.Suspects = e.liars.list()
	return nil, false, qe
}

// graceFor says how long to go on waiting for the backends still out, or
// nil to wait for all of them (under the caller's deadline).
//
//   - Too few left to make k good shares: waiting cannot help; the grace
//     only lets late answers into the report.
//   - k shares in that do not fit: a backend lied or the header was
//     tampered with. A liar must not make a slower honest backend miss
//     the quorum (a key file answers in microseconds, a cloud KMS in a
//     hundred milliseconds), so the rest get at least minMismatchGrace;
//     but a tampered header with a dark backend must not hold the caller
//     for its whole deadline. The probe's view of the backends still out
//     does not shorten this: a probe can miss a backend that answers
//     unwraps, and a liar must not use that to deny data that k honest
//     backends can still open. (A header refused after the grace is then
//     refused for a while without asking: see dekFor.)
//
// With too few left, and every backend still out found down by the last
// probe (upOut false), there is nothing to wait for at all.
func graceFor(k, good, pending int, elapsed time.Duration, upOut bool) <-chan time.Time {
	switch {
	case good+pending < k && !upOut:
		return time.After(0)
	case good+pending < k:
		return time.After(max(elapsed, minReportGrace))
	case good >= k:
		return time.After(max(3*elapsed, minMismatchGrace))
	}
	return nil
}

// anyBelievedUp reports whether any of the named backends answered the
// last probe (before the first probe, all are believed up).
func (e *Envelope) anyBelievedUp(names map[string]bool) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.observed == nil {
		return len(names) > 0
	}
	for n := range names {
		if _, up := e.observed[n]; up {
			return true
		}
	}
	return false
}

const (
	minReportGrace   = 20 * time.Millisecond
	minMismatchGrace = 2 * time.Second
)

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

// unwrapShare asks one backend for its share and checks its framing.
func (e *Envelope) unwrapShare(ctx context.Context, h *Header, ws WrappedShare) shareResult {
	res := shareResult{backend: ws.Backend}
	b := e.backends[ws.Backend]
	if b == nil {
		res.err = errNotConfigured
		return res
	}
	start := time.Now()
	raw, err := b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: ws.Wrapped, KeyIdentity: ws.KeyIdentity}, h.shareAAD(ws.Index, len(h.Shares)))
	e.obs.BackendCall(ws.Backend, "unwrap", err, time.Since(start))
	if err != nil {
		e.log.Debug("share not unwrapped", "backend", ws.Backend, "kind", kmsclients.Kind(err), "took", time.Since(start))
		res.err = err
		return res
	}
	defer clear(raw)
	s, err := split.Parse(raw, dekSize)
	switch {
	case err != nil:
		res.err = fmt.Errorf("returned a malformed share: %w", kmsclients.ErrInvalidCiphertext)
	case s.Index != ws.Index || s.Threshold != h.Threshold:
		s.Wipe()
		res.err = fmt.Errorf("returned share %d of %d, want share %d of %d: %w", s.Index, s.Threshold, ws.Index, h.Threshold, kmsclients.ErrInvalidCiphertext)
	default:
		res.share = s
		e.log.Debug("share unwrapped", "backend", ws.Backend, "took", time.Since(start))
	}
	return res
}

// combine looks for the DEK the header commits to among the shares in
// (see [split.Decode], or [split.DecodeSoFar] while more shares may
// come); when it is found,
// the shares in that are not on it are reported. The error is ctx's.
func (e *Envelope) combine(ctx context.Context, h *Header, raw []byte, good []split.Share, final bool) (split.Decoded, error) {
	if len(good) < h.Threshold {
		return split.Decoded{}, nil
	}
	decode := split.DecodeSoFar
	if final {
		decode = split.Decode
	}
	found, err := decode(ctx, good, func(key []byte) bool { return h.verify(raw, key) })
	if found.Secret != nil {
		e.reportMisfits(h, good, found.Fit)
	}
	return found, err
}

// reportMisfits names the backends whose shares are not on the DEK's
// polynomial, and reports whether it could: only when enough shares fit
// to prove them wrong (split.NamingQuorum). With fewer, k-1 colluding
// custodians could have made the fitting set themselves, and naming the
// others would blame honest ones; that is said once per DEK instead.
func (e *Envelope) reportMisfits(h *Header, good []split.Share, fit []int) (named bool) {
	var misfits []int
	for _, s := range good {
		if !slices.Contains(fit, s.Index) {
			misfits = append(misfits, s.Index)
		}
	}
	named = len(fit) >= split.NamingQuorum(h.Threshold)
	switch {
	case len(misfits) == 0:
	case named:
		for _, i := range misfits {
			e.shareMismatch(h, i)
		}
	case e.disagreements.add("", h.KeyID()):
		var names []string
		for _, i := range misfits {
			names = append(names, h.Shares[i-1].Backend)
		}
		e.log.Warn("backends returned shares that do not all lie on one polynomial, and too few fit the DEK to tell which lie",
			"key_id", h.KeyID(), "fitting", len(fit), "not_fitting", names)
	}
	return named
}

// shareMismatch reports a backend whose share is not on a DEK that other
// backends' shares proved: a lying or broken custodian, eating the
// margin of n-k silently unless named.
func (e *Envelope) shareMismatch(h *Header, index int) {
	backend, keyID := h.Shares[index-1].Backend, h.KeyID()
	level := slog.LevelWarn
	if !e.liars.add(backend, keyID) {
		level = slog.LevelDebug // said once per backend and DEK
	}
	e.log.Log(context.Background(), level, "a backend returned a share that does not fit its DEK: the custodian is lying or broken, and no longer counts towards the quorum",
		"backend", backend, "key_id", keyID)
	if o, ok := e.obs.(ShareMismatchObserver); ok {
		o.ShareMismatch(backend)
	}
}

// suspects remembers which backend returned a share that did not fit
// which DEK; safe for concurrent use, bounded by maxSuspects.
type suspects struct {
	mu   sync.Mutex
	seen map[[2]string]bool // backend, key_id
}

const maxSuspects = 1024

// add reports whether the pair is new.
func (s *suspects) add(backend, keyID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[[2]string]bool{}
	}
	pair := [2]string{backend, keyID}
	if s.seen[pair] || len(s.seen) >= maxSuspects {
		return false
	}
	s.seen[pair] = true
	return true
}

// list returns the backends caught, sorted.
func (s *suspects) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for pair := range s.seen {
		if !slices.Contains(out, pair[0]) {
			out = append(out, pair[0])
		}
	}
	slices.Sort(out)
	return out
}

// ShareMismatchObserver is an [Observer] that also counts shares that did
// not fit a recovered DEK, by backend.
type ShareMismatchObserver interface {
	ShareMismatch(backend string)
}

// secretKeyShares reports whether k of the shares (by index) came from
// backends that wrap with a secret key: then custodians made the DEK.
func (e *Envelope) secretKeyShares(h *Header, indexes []int) bool {
	n := 0
	for _, i := range indexes {
		if b := e.backends[h.Shares[i-1].Backend]; b != nil && !kmsclients.IsPublicWrap(b) {
			n++
		}
	}
	return n >= h.Threshold
}
