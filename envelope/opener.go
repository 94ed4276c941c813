package envelope

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// opener recovers a header's DEK from the backends (unwrap, combine,
// verify). It keeps no DEK, only which custodians lied, for reports.
type opener struct {
	backends     map[string]kmsclients.Backend // by name, fixed at [New]
	minThreshold int
	log          *slog.Logger
	obs          Observer
	probes       *probeView
	liars        suspects // caught returning shares that do not fit
	// disagreements: DEKs whose custodians disagreed, no liar provable.
	disagreements suspects
}

func newOpener(cfg Config, log *slog.Logger, obs Observer, probes *probeView) (*opener, error) {
	o := &opener{backends: map[string]kmsclients.Backend{}, minThreshold: cfg.MinThreshold, log: log, obs: obs, probes: probes}
	for _, b := range cfg.Backends {
		if err := kmsclients.ValidateName(b.Name()); err != nil {
			return nil, err
		}
		if o.backends[b.Name()] != nil {
			return nil, fmt.Errorf("backend %s configured twice", b.Name())
		}
		o.backends[b.Name()] = b
	}
	return o, nil
}

// parse refuses a header below the threshold floor before any backend is
// asked: whoever can wrap for one backend could write a 1-of-1 header.
func (o *opener) parse(raw []byte) (*Header, error) {
	h, err := ParseHeader(raw)
	if err != nil {
		return nil, err
	}
	if h.Threshold < o.minThreshold {
		return nil, fmt.Errorf("%w: header threshold %d is below the minimum of %d", ErrInvalid, h.Threshold, o.minThreshold)
	}
	return h, nil
}

// open recovers and verifies h's DEK; the caller caches it. With authOnly,
// only shares that prove who made them are combined.
func (o *opener) open(ctx context.Context, raw []byte, h *Header, authOnly bool) (*dek, error) {
	key, authenticated, err := o.recoverDEK(ctx, h, raw, authOnly)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	d, err := newDEK(key, raw, h)
	if err != nil {
		return nil, err
	}
	d.authenticated = authenticated
	return d, nil
}

type shareResult struct {
	backend string
	share   split.Share
	err     error
}

// recoverDEK asks every backend at once and returns the DEK as soon as k
// shares combine to the committed key; slower calls are cancelled. With
// authOnly, public-key backends are not asked ([lifecycle.unlockCurrent]).
// It gives up early ([graceFor]) so that a tampered header cannot hold a
// caller as long as a dead backend can. authenticated: k of the fitting
// shares came from secret-key backends.
func (o *opener) recoverDEK(ctx context.Context, h *Header, raw []byte, authOnly bool) (key []byte, authenticated bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc := &recovery{o: o, h: h, raw: raw, start: time.Now(), results: make(chan shareResult, len(h.Shares)),
		failures: map[string]error{}, out: map[string]bool{}}
	defer rc.wipe()
	rc.ask(ctx, authOnly)
	found := rc.collect(ctx)
	if found.Secret == nil && !rc.final && !rc.tampered && ctx.Err() == nil {
		// Polynomials through exactly k shares, skipped while more could come.
		if last, err := o.combine(ctx, h, raw, rc.good, true); err == nil {
			found = last
		}
	}
	if found.Secret != nil {
		return found.Secret, o.secretKeyShares(h, found.Fit), nil
	}
	return nil, false, rc.failure(ctx)
}

// recovery is the state of one [opener.recoverDEK]; one goroutine uses it.
type recovery struct {
	o        *opener
	h        *Header
	raw      []byte
	start    time.Time
	results  chan shareResult
	failures map[string]error // by backend
	out      map[string]bool  // asked, not answered
	good     []split.Share
	tampered bool // more than k shares agree, but not with the header
	final    bool // the last combine saw every share
}

// ask starts one unwrap per share (none for public-key backends when
// authOnly).
func (rc *recovery) ask(ctx context.Context, authOnly bool) {
	for _, ws := range rc.h.Shares {
		if b := rc.o.backends[ws.Backend]; authOnly && b != nil && kmsclients.IsPublicWrap(b) {
			rc.failures[ws.Backend] = errPublicWrap
			continue
		}
		rc.out[ws.Backend] = true
		go func() { rc.results <- rc.o.unwrapShare(ctx, rc.h, ws) }()
	}
}

// collect takes answers until k shares fit, more cannot help, or the
// [graceFor] the backends still out ends.
func (rc *recovery) collect(ctx context.Context) split.Decoded {
	var grace <-chan time.Time
	for pending := len(rc.out); pending > 0; {
		if grace == nil {
			grace = graceFor(rc.h.Threshold, len(rc.good), pending, time.Since(rc.start), rc.o.probes.anyUp(rc.out))
		}
		select {
		case r := <-rc.results:
			pending--
			found, stop := rc.take(ctx, r, pending == 0)
			if found.Secret != nil {
				return found
			}
			if stop {
				pending = 0
			}
		case <-grace:
			rc.o.log.Debug("no quorum can be made from the shares in; not waiting longer for the remaining backends", "pending", pending)
			pending = 0
		}
	}
	return split.Decoded{}
}

// take records one answer and combines; stop: more answers cannot help.
func (rc *recovery) take(ctx context.Context, r shareResult, last bool) (found split.Decoded, stop bool) {
	delete(rc.out, r.backend)
	if r.err != nil {
		rc.failures[r.backend] = r.err
		return split.Decoded{}, false
	}
	rc.good = append(rc.good, r.share)
	found, err := rc.o.combine(ctx, rc.h, rc.raw, rc.good, last)
	rc.final = last
	switch {
	case err != nil:
		return split.Decoded{}, true
	case found.Secret == nil && len(found.Agree) >= split.TamperedQuorum(rc.h.Threshold):
		rc.o.log.Debug("shares agree with each other but not with the header: tampered", "agreeing", len(found.Agree))
		rc.tampered = true
		return split.Decoded{}, true
	}
	return found, false
}

// failure explains a recovery that found no DEK.
func (rc *recovery) failure(ctx context.Context) *QuorumError {
	var unwrapped []string
	for _, s := range rc.good {
		unwrapped = append(unwrapped, rc.h.Shares[s.Index-1].Backend)
	}
	sort.Strings(unwrapped)
	qe := newQuorumError(ctx, rc.h, rc.failures, unwrapped, len(rc.h.Shares)-len(rc.failures)-len(rc.good), rc.tampered)
	qe.Suspects = rc.o.liars.list()
	return qe
}

func (rc *recovery) wipe() {
	for _, s := range rc.good {
		s.Wipe()
	}
}

// graceFor says how long to wait for the backends still out, or nil for
// all of them (under the caller's deadline).
//   - Too few left for k: the grace only lets late answers into the
//     report; none if the last probe saw them all down (upOut false).
//   - k shares in that do not fit (a liar or a tampered header): at least
//     minMismatchGrace, so a fast liar cannot make a slower honest backend
//     miss the quorum, yet a dark backend cannot hold the caller to its
//     deadline. The probe's view does not shorten this: a probe can miss a
//     backend that answers unwraps, and a liar must not exploit that.
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

const (
	minReportGrace   = 20 * time.Millisecond
	minMismatchGrace = 2 * time.Second
)

// unwrapShare asks one backend for its share and checks its framing.
func (o *opener) unwrapShare(ctx context.Context, h *Header, ws WrappedShare) shareResult {
	res := shareResult{backend: ws.Backend}
	b := o.backends[ws.Backend]
	if b == nil {
		res.err = errNotConfigured
		return res
	}
	start := time.Now()
	raw, err := b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: ws.Wrapped, KeyIdentity: ws.KeyIdentity}, h.shareAAD(ws.Index, len(h.Shares)))
	o.obs.BackendCall(ws.Backend, "unwrap", err, time.Since(start))
	if err != nil {
		o.log.Debug("share not unwrapped", "backend", ws.Backend, "kind", kmsclients.Kind(err), "took", time.Since(start))
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
		o.log.Debug("share unwrapped", "backend", ws.Backend, "took", time.Since(start))
	}
	return res
}

// combine looks for the committed DEK among good ([split.Decode], or
// [split.DecodeSoFar] while more may come) and reports misfits. The error
// is ctx's.
func (o *opener) combine(ctx context.Context, h *Header, raw []byte, good []split.Share, final bool) (split.Decoded, error) {
	if len(good) < h.Threshold {
		return split.Decoded{}, nil
	}
	decode := split.DecodeSoFar
	if final {
		decode = split.Decode
	}
	found, err := decode(ctx, good, func(key []byte) bool { return h.verify(raw, key) })
	if found.Secret != nil {
		o.reportMisfits(h, good, found.Fit)
	}
	return found, err
}

// reportMisfits names backends whose shares are off the DEK's polynomial,
// only when [split.NamingQuorum] shares fit: with fewer, k-1 colluders
// could have made the fitting set and would get honest ones blamed.
func (o *opener) reportMisfits(h *Header, good []split.Share, fit []int) (named bool) {
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
			o.shareMismatch(h, i)
		}
	case o.disagreements.add("", h.KeyID()):
		var names []string
		for _, i := range misfits {
			names = append(names, h.Shares[i-1].Backend)
		}
		o.log.Warn("backends returned shares that do not all lie on one polynomial, and too few fit the DEK to tell which lie",
			"key_id", h.KeyID(), "fitting", len(fit), "not_fitting", names)
	}
	return named
}

// shareMismatch names a lying or broken custodian, which would otherwise
// eat the n-k margin silently.
func (o *opener) shareMismatch(h *Header, index int) {
	backend, keyID := h.Shares[index-1].Backend, h.KeyID()
	level := slog.LevelWarn
	if !o.liars.add(backend, keyID) {
		level = slog.LevelDebug // said once per backend and DEK
	}
	o.log.Log(context.Background(), level, "a backend returned a share that does not fit its DEK: the custodian is lying or broken, and no longer counts towards the quorum",
		"backend", backend, "key_id", keyID)
	if o, ok := o.obs.(ShareMismatchObserver); ok {
		o.ShareMismatch(backend)
	}
}

// suspects remembers (backend, key_id) pairs of shares that did not fit,
// up to maxSuspects.
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

// ShareMismatchObserver is an [Observer] that also counts, by backend,
// shares that did not fit a recovered DEK.
type ShareMismatchObserver interface {
	ShareMismatch(backend string)
}

// secretKeyShares reports whether k of the shares came from secret-key
// backends, proving custodians made the DEK.
func (o *opener) secretKeyShares(h *Header, indexes []int) bool {
	n := 0
	for _, i := range indexes {
		if b := o.backends[h.Shares[i-1].Backend]; b != nil && !kmsclients.IsPublicWrap(b) {
			n++
		}
	}
	return n >= h.Threshold
}
