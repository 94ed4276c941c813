package envelope

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// lifecycle owns the current DEK and the state file. Changes of DEK run
// one at a time as a [rotation]; Encrypt and status read [currentDEK].
type lifecycle struct {
	cfg    Config
	log    *slog.Logger
	obs    Observer
	open   *opener
	keep   func(*dek) // [lookup.add]
	probes *probeView
	state  *stateFile // nil: in memory only

	cur       currentDEK
	rotation  rotationLock
	adopting  atomic.Bool         // an adoption runs in the background
	candidate atomic.Pointer[dek] // newest confirmed DEK seen, not adopted yet

	// The header signing key, once unlocked (with a [Recovery] policy).
	signKey atomic.Pointer[ed25519.PrivateKey]

	// A candidate in the state dir: recorded holds what is there, and
	// restored what was read at start and is not opened again yet.
	recordMu sync.Mutex
	recorded *wrappedDEK
	restored atomic.Pointer[wrappedDEK]
}

// wrappedDEK is a header known but not opened.
type wrappedDEK struct {
	raw     []byte
	parsed  *Header
	tried   atomic.Int64 // unix nanoseconds of the last try to open it
	lastErr string
}

func newLifecycle(cfg Config, log *slog.Logger, obs Observer, open *opener, keep func(*dek), probes *probeView) (*lifecycle, error) {
	l := &lifecycle{cfg: cfg, log: log, obs: obs, open: open, keep: keep, probes: probes}
	l.rotation.r.lifecycle = l
	if cfg.StateDir == "" {
		return l, nil
	}
	l.state = &stateFile{dir: cfg.StateDir}
	if raw, h := l.state.loadCandidate(log); raw != nil {
		l.recorded = &wrappedDEK{raw: raw, parsed: h}
		l.restored.Store(&wrappedDEK{raw: raw, parsed: h})
		log.Info("a newer DEK another node made, seen before the restart, is adopted once k secret-key backends confirm it", "key_id", h.KeyID(), "generation", h.Generation)
	}
	raw, err := l.state.load(log)
	if err != nil || raw == nil {
		return l, err
	}
	h, _ := ParseHeader(raw) // load has parsed it
	l.cur.load(raw, h)
	log.Info("loaded wrapped DEK from state", "key_id", h.KeyID(), "generation", h.Generation, "created", h.Created)
	return l, nil
}

// rotationLock lets one change of DEK run at a time: changes are methods
// of [rotation], which only [lifecycle.lock] hands out.
type rotationLock struct {
	mu sync.Mutex
	r  rotation
}

// rotation is a change of DEK under way (rotate, unlock, adopt).
type rotation struct {
	*lifecycle
	replacing string // key id of a DEK set aside, not replaced yet
}

// lock takes the rotation lock until unlock.
func (l *lifecycle) lock() (r *rotation, unlock func()) {
	l.rotation.mu.Lock()
	return &l.rotation.r, l.rotation.mu.Unlock
}

// prepare is [Envelope.Prepare].
func (l *lifecycle) prepare(ctx context.Context) error {
	if l.cur.ready() {
		return nil
	}
	r, unlock := l.lock()
	defer unlock()
	return r.prepare(ctx)
}

func (r *rotation) prepare(ctx context.Context) error {
	if r.cfg.Recovery != nil {
		// Needed by the next rotation only: a failure here is retried then.
		if _, err := r.signer(ctx); err != nil {
			r.log.Warn("the header signing key is not unlocked; rotations wait for it", "error", err)
		}
	}
	ready, raw := r.cur.stored()
	switch {
	case ready:
		return nil
	case raw == nil && r.replacing != "":
		return r.rotate(ctx, "the stored DEK "+r.replacing+" cannot be unlocked and was set aside")
	case raw == nil:
		return r.rotate(ctx, "first start: no DEK yet")
	}
	if reason := r.configChange(); reason != "" {
		return r.replaceForConfig(ctx, raw, reason)
	}
	d, err := r.unlockCurrent(ctx, raw)
	if err != nil {
		return r.replaceUnusable(ctx, err)
	}
	r.setCurrent(d, OriginStored)
	r.log.Info("current DEK unlocked", "key_id", d.keyID)
	return nil
}

// signer returns the header signing key, unlocking it the first time.
func (l *lifecycle) signer(ctx context.Context) (ed25519.PrivateKey, error) {
	if k := l.signKey.Load(); k != nil {
		return *k, nil
	}
	k, err := l.cfg.Recovery.SigningKey.unlock(ctx, l.open)
	if err != nil {
		return nil, err
	}
	l.signKey.Store(&k)
	l.log.Info("header signing key unlocked", "signer_id", fmt.Sprintf("%x", SignerID(k.Public().(ed25519.PublicKey))))
	return k, nil
}

// setCurrent makes d the current DEK.
func (r *rotation) setCurrent(d *dek, origin string) {
	r.cur.set(d, origin, r.cfg.Now())
	r.forgetRecorded(d.parsed)
}

// openAndKeep recovers h's DEK and caches it.
func (l *lifecycle) openAndKeep(ctx context.Context, raw []byte, h *Header, authOnly bool) (*dek, error) {
	d, err := l.open.open(ctx, raw, h, authOnly)
	if err == nil {
		l.keep(d)
	}
	return d, err
}

// currentDEK is the current DEK and the generations seen; only a
// [rotation] changes it.
type currentDEK struct {
	mu         sync.RWMutex
	d          *dek   // nil until created or unlocked
	header     []byte // known even while locked
	parsed     *Header
	origin     string // OriginMade, ...
	since      time.Time
	highestGen uint32 // made here, unlocked or confirmed for adoption
}

func (c *currentDEK) get() *dek {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.d
}

func (c *currentDEK) ready() bool { return c.get() != nil }

// stored reports whether the DEK is unlocked, and its wrapped form.
func (c *currentDEK) stored() (ready bool, raw []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.d != nil, c.header
}

// wrapped returns the header of the current DEK, nil before the first.
func (c *currentDEK) wrapped() ([]byte, *Header) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.header, c.parsed
}

func (c *currentDEK) keyID() string {
	if _, h := c.wrapped(); h != nil {
		return h.KeyID()
	}
	return ""
}

func (c *currentDEK) info() CurrentInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.d == nil {
		return CurrentInfo{}
	}
	return CurrentInfo{KeyID: c.d.keyID, Generation: c.d.parsed.Generation, Origin: c.origin, Since: c.since}
}

// load records the stored header, still locked; its generation is not
// noted, since it may be anyone's until unlocked.
func (c *currentDEK) load(raw []byte, h *Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.header, c.parsed = raw, h
}

func (c *currentDEK) set(d *dek, origin string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.d, c.header, c.parsed = d, d.header, d.parsed
	c.origin, c.since = origin, now
	c.highestGen = max(c.highestGen, d.parsed.Generation)
}

// forget drops the stored header, set aside as unusable.
func (c *currentDEK) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.header, c.parsed = nil, nil
}

func (c *currentDEK) noteGeneration(g uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.highestGen = max(c.highestGen, g)
}

// nextGeneration is above every DEK made here, unlocked or confirmed.
func (c *currentDEK) nextGeneration() uint32 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	g := c.highestGen
	if c.d != nil {
		g = max(g, c.d.parsed.Generation)
	}
	if g == math.MaxUint32 { // never wraps to an older generation
		return g
	}
	return g + 1
}
