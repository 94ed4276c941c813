package grpcserver

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
)

const healthzOK = "ok"

// BackendHealth is what the last probe of one backend found.
type BackendHealth struct {
	Name        string
	Up          bool
	Kind        string // error kind when down
	Error       string // for operators (status, config check); never in Status
	KeyIdentity string
	Latency     time.Duration
}

// Snapshot is the plugin's health as of the last probe, so Status,
// /readyz and metrics call no backend.
type Snapshot struct {
	Backends  []BackendHealth
	Reachable int
	Threshold int
	Ready     bool   // the current DEK is unlocked
	KeyID     string // of the current DEK
	Healthz   string // "ok", or why not
	// RotationPending says why a wanted rotation was not done, in backend
	// names and error kinds only: /readyz shows it to anyone.
	RotationPending string
	pendingDetail   string    // RotationPending with error text, for the log
	PendingSince    time.Time // when RotationPending last became non-empty
	Current         envelope.CurrentInfo
	Custody         *envelope.DEKCheck // last drill of the current DEK
	Officers        *OfficerBranch     // the current DEK's; nil without one
}

// OfficerBranch is the current DEK's recovery branch: no officer is ever
// down, so its margin is the policy's, m - k'.
type OfficerBranch struct {
	Threshold, Officers int
	SignerID            string // hex
}

func officerBranch(h *envelope.Header) *OfficerBranch {
	if h == nil || h.Recovery == nil {
		return nil
	}
	return &OfficerBranch{Threshold: h.Recovery.Threshold, Officers: len(h.Recovery.Shares), SignerID: fmt.Sprintf("%x", h.Recovery.SignerID)}
}

func (b *OfficerBranch) String() string {
	return fmt.Sprintf("%d of %d officers (margin %d), headers signed by %s", b.Threshold, b.Officers, b.Officers-b.Threshold, b.SignerID)
}

// RotationOverdue is how long a rotation may stay postponed before
// /readyz and `trousseau status` warn; Status stays "ok": the DEK works.
const RotationOverdue = 10 * time.Minute

// Warnings lists what an operator should look at although the plugin
// serves.
func (s Snapshot) Warnings(now time.Time) []string {
	var out []string
	if !s.Ready && s.RotationPending != "" {
		out = append(out, "no usable DEK: "+s.RotationPending)
	} else if s.RotationPending != "" && !s.PendingSince.IsZero() && now.Sub(s.PendingSince) >= RotationOverdue {
		out = append(out, fmt.Sprintf("DEK rotation due since %s (%s ago) and not done: %s",
			s.PendingSince.UTC().Format(time.RFC3339), now.Sub(s.PendingSince).Truncate(time.Second), s.RotationPending))
	}
	for _, b := range s.Backends {
		if !b.Up {
			out = append(out, fmt.Sprintf("backend %s down (%s)", b.Name, b.Kind))
		}
	}
	if c := s.Custody; c != nil && c.Margin() <= 0 {
		var lost []string
		for _, sh := range c.Shares {
			if !sh.OK {
				lost = append(lost, sh.Backend+" "+kmsclients.Kind(sh.Err))
			}
		}
		out = append(out, fmt.Sprintf("current DEK at custody margin %d: %d of %d shares check out, %d needed (not: %s); one more loss and it cannot be recovered: rotate while every backend answers",
			c.Margin(), c.Working, len(c.Shares), c.Threshold, strings.Join(lost, ", ")))
	}
	return out
}

// Prober probes every backend on an interval, keeps a [Snapshot], makes
// or unlocks the current DEK when it can, and rotates it when due.
type Prober struct {
	env       *envelope.Envelope
	interval  time.Duration
	timeout   time.Duration
	log       *slog.Logger
	metrics   *Metrics
	rotateCh  chan struct{}
	rotateNow chan chan<- Rotation // from Rotate: where to send the outcome
	// requested: an operator's rotation not done yet, retried each probe.
	requested    atomic.Bool
	previous     atomic.Uint64 // earlier DEKs drilled so far
	lostPrevious sync.Map      // earlier DEKs found unrecoverable, warned once
	now          func() time.Time

	mu   sync.RWMutex
	snap Snapshot
}

// NewProber makes a prober; Run starts it.
func NewProber(env *envelope.Envelope, interval, timeout time.Duration, log *slog.Logger, m *Metrics) *Prober {
	p := &Prober{env: env, interval: interval, timeout: timeout, log: log, metrics: m, rotateCh: make(chan struct{}, 1), rotateNow: make(chan chan<- Rotation), now: time.Now}
	p.snap = Snapshot{Threshold: env.Threshold(), KeyID: env.KeyID(), Healthz: "starting: backends not probed yet"}
	return p
}

// Snapshot returns the latest health.
func (p *Prober) Snapshot() Snapshot {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.snap
}

// RequestRotation asks for a DEK rotation at the next probe, or now.
func (p *Prober) RequestRotation() {
	select {
	case p.rotateCh <- struct{}{}:
	default:
	}
}

// Rotation is the outcome of a rotation asked with [Prober.Rotate].
type Rotation struct {
	Rotated    bool   // the new DEK is saved and current
	KeyID      string // of the current DEK after the attempt
	Generation uint32
	// Postponed says why not, with error text: the caller is the plugin's
	// own user (the admin socket).
	Postponed string
}

// Rotate asks for a DEK rotation now and waits for the probe that tries
// it, or for ctx.
func (p *Prober) Rotate(ctx context.Context) (Rotation, error) {
	done := make(chan Rotation, 1)
	select {
	case p.rotateNow <- done:
	case <-ctx.Done():
		return Rotation{}, ctx.Err()
	}
	select {
	case r := <-done:
		return r, nil
	case <-ctx.Done():
		return Rotation{}, ctx.Err()
	}
}

// rotateFor tries a rotation and sends its outcome on done.
func (p *Prober) rotateFor(ctx context.Context, done chan<- Rotation) {
	p.ProbeOnce(ctx, true)
	info, s := p.env.CurrentInfo(), p.Snapshot()
	r := Rotation{Rotated: !p.requested.Load(), KeyID: info.KeyID, Generation: info.Generation}
	if !r.Rotated {
		r.Postponed = cmp.Or(s.pendingDetail, s.Healthz)
	}
	done <- r
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	p.ProbeOnce(ctx, false)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.ProbeOnce(ctx, false)
		case <-p.rotateCh:
			p.ProbeOnce(ctx, true)
		case done := <-p.rotateNow:
			p.rotateFor(ctx, done)
		}
	}
}

// ProbeOnce probes all backends, then makes, unlocks or rotates the DEK as
// the results allow; forceRotate rotates even if nothing is due.
func (p *Prober) ProbeOnce(ctx context.Context, forceRotate bool) {
	if forceRotate {
		p.requested.Store(true)
	}
	results := p.probeAll(ctx)
	reachable := 0
	identities := map[string]string{}
	for _, r := range results {
		if r.Up {
			reachable++
			identities[r.Name] = r.KeyIdentity
		}
	}
	pending := p.maintainDEK(ctx, reachable, len(results), identities, p.requested.Load())
	s := Snapshot{Backends: results, Reachable: reachable, Threshold: p.env.Threshold(),
		Ready: p.env.Ready(), KeyID: p.env.KeyID(), RotationPending: pending.public, pendingDetail: pending.detail,
		Current: p.env.CurrentInfo(), Custody: p.drillCurrent(ctx), Officers: officerBranch(p.env.Current())}
	s.Healthz = healthz(s)
	p.mu.Lock()
	old := p.snap
	s.PendingSince = old.PendingSince
	if pending.public == "" {
		s.PendingSince = time.Time{}
	} else if old.RotationPending == "" {
		s.PendingSince = p.now()
	}
	p.snap = s
	p.mu.Unlock()
	p.logChanges(old, s)
	if p.metrics != nil {
		p.metrics.observeProbe(s)
	}
	p.drillPrevious(ctx)
}

// drillCurrent checks every backend's share of the current DEK, so a
// share lost while k others answer shows before anyone runs a drill; nil
// without a DEK.
func (p *Prober) drillCurrent(ctx context.Context) *envelope.DEKCheck {
	raw := p.env.CurrentHeader()
	if raw == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	check, err := p.env.Drill(ctx, raw)
	if err != nil {
		p.log.Warn("the current DEK's header cannot be drilled", "error", err)
		return nil
	}
	return &check
}

// drillPrevious drills one earlier DEK per probe, in turn: a custodian
// may answer truly for the current DEK and lie about older ones that
// stored data still needs.
func (p *Prober) drillPrevious(ctx context.Context) {
	prev := p.env.PreviousHeaders()
	if len(prev) == 0 {
		return
	}
	raw := prev[(p.previous.Add(1)-1)%uint64(len(prev))]
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	check, err := p.env.Drill(ctx, raw)
	if err != nil {
		p.log.Debug("an earlier DEK's header cannot be drilled", "error", err)
		return
	}
	p.log.Debug("earlier DEK drilled", "key_id", check.KeyID, "working", check.Working, "threshold", check.Threshold)
	if check.Margin() >= 0 {
		p.lostPrevious.Delete(check.KeyID)
		return
	}
	if _, said := p.lostPrevious.LoadOrStore(check.KeyID, true); !said {
		p.log.Warn("an earlier DEK kept in the state cannot be recovered from the backends that answer now: data still sealed under it is unreadable until enough of them are back; run trousseau drill against a snapshot to see what is affected",
			"key_id", check.KeyID, "working", check.Working, "threshold", check.Threshold)
	}
}

// logChanges logs each change once; only the log carries backend errors.
func (p *Prober) logChanges(old, s Snapshot) {
	if old.Healthz != s.Healthz {
		if s.Healthz == healthzOK {
			p.log.Info("healthy", "reachable", s.Reachable, "backends", len(s.Backends), "threshold", s.Threshold, "key_id", s.KeyID)
		} else {
			p.log.Warn("unhealthy", "reason", s.Healthz)
		}
	}
	wasUp := map[string]bool{}
	for _, b := range old.Backends {
		wasUp[b.Name] = b.Up
	}
	for _, b := range s.Backends {
		up, known := wasUp[b.Name]
		switch {
		case !b.Up && (up || !known):
			p.log.Warn("backend down", "backend", b.Name, "kind", b.Kind, "error", b.Error)
		case b.Up && known && !up:
			p.log.Info("backend up again", "backend", b.Name, "key_identity", b.KeyIdentity)
		}
	}
	switch {
	case s.pendingDetail != "" && s.pendingDetail != old.pendingDetail && !s.Ready:
		p.log.Warn("no usable DEK: Encrypt fails until one is made or unlocked", "cause", s.pendingDetail, "since", s.PendingSince)
	case s.pendingDetail != "" && s.pendingDetail != old.pendingDetail:
		p.log.Warn("DEK rotation postponed; the current DEK stays in use", "cause", s.pendingDetail, "since", s.PendingSince)
	case s.RotationPending == "" && old.RotationPending != "":
		p.log.Info("postponed DEK rotation no longer pending", "key_id", s.KeyID)
	}
}

func (p *Prober) probeAll(ctx context.Context) []BackendHealth {
	backends := p.env.Backends()
	out := make([]BackendHealth, len(backends))
	for i, r := range kmsclients.ProbeAll(ctx, backends, p.timeout) {
		name := backends[i].Name()
		if p.metrics != nil {
			p.metrics.BackendCall(name, "probe", r.Err, r.Took)
		}
		out[i] = BackendHealth{Name: name, Up: r.Err == nil, KeyIdentity: r.KeyIdentity, Latency: r.Took}
		if r.Err != nil {
			out[i].Kind, out[i].Error = kmsclients.Kind(r.Err), r.Err.Error()
		}
	}
	return out
}

// pending: why a wanted rotation did not happen, for /readyz and the log.
type pending struct{ public, detail string }

// failed is the pending of what, stopped by err.
func failed(what string, err error) pending {
	return pending{what + ": " + publicCause(err) + " (errors in the plugin's log)", what + ": " + err.Error()}
}

// maintainDEK returns why a wanted rotation did not happen, or nothing.
func (p *Prober) maintainDEK(ctx context.Context, reachable, n int, identities map[string]string, force bool) pending {
	opCtx, cancel := context.WithTimeout(ctx, 2*p.timeout)
	defer cancel()
	if !p.env.Ready() {
		if reachable < p.env.Threshold() {
			return pending{}
		}
		if err := p.env.Prepare(opCtx); err != nil {
			// logChanges logs it once per cause.
			p.log.Debug("current DEK not usable yet", "error", err)
			return failed("cannot create or unlock the DEK", err)
		}
	}
	p.env.RetryAdoption()
	reason := p.env.RotationDue(identities)
	if force {
		reason = "requested by operator"
	}
	done := func() pending { p.requested.Store(false); return pending{} }
	if reason == "" {
		return done()
	}
	if reachable < n {
		why := fmt.Sprintf("%s; postponed: %d of %d backends reachable, a new DEK needs all", reason, reachable, n)
		return pending{why, why}
	}
	if err := p.env.Rotate(opCtx, reason); err != nil {
		return failed(reason+"; rotation failed", err)
	}
	return done()
}

// publicCause is what an unauthenticated endpoint may show of err:
// backend names with error kinds ("vault-eu permission"), or err's kind;
// error text (ARNs, URLs, paths) is for the log.
func publicCause(err error) string {
	var parts []string
	forBackendErrors(err, func(e *kmsclients.Error) {
		name := cmp.Or(e.Name, e.Backend)
		if part := name + " " + kmsclients.Kind(e); !slices.Contains(parts, part) {
			parts = append(parts, part)
		}
	})
	if len(parts) == 0 {
		return "error kind " + kmsclients.Kind(err)
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// forBackendErrors calls f with each [kmsclients.Error] in err's tree.
func forBackendErrors(err error, f func(*kmsclients.Error)) {
	switch e := err.(type) {
	case *kmsclients.Error:
		f(e)
	case interface{ Unwrap() error }:
		forBackendErrors(e.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, err := range e.Unwrap() {
			forBackendErrors(err, f)
		}
	}
}

// healthz is "ok" while the DEK is usable and a quorum answered, else a
// reason that kube-apiserver shows in /healthz/kms-providers.
func healthz(s Snapshot) string {
	var down []string
	for _, b := range s.Backends {
		if !b.Up {
			down = append(down, b.Name+" "+b.Kind)
		}
	}
	downText := "none; see the plugin's log"
	if len(down) > 0 {
		downText = strings.Join(down, ", ")
	}
	// Names and error kinds only: error text stays in the log.
	switch {
	case s.Reachable < s.Threshold:
		return fmt.Sprintf("quorum lost: %d of %d backends reachable, %d needed (down: %s)", s.Reachable, len(s.Backends), s.Threshold, downText)
	case !s.Ready && s.KeyID == "" && len(down) == 0:
		return fmt.Sprintf("no DEK yet: all %d backends answered but it could not be made (see `trousseau status` or the plugin's log)", len(s.Backends))
	case !s.Ready && s.KeyID == "":
		return fmt.Sprintf("no DEK yet: a new one needs all %d backends (down: %s)", len(s.Backends), downText)
	case !s.Ready:
		return fmt.Sprintf("DEK not unlocked yet: %d backends needed (down: %s)", s.Threshold, downText)
	}
	return healthzOK
}
