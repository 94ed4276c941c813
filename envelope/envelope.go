// Package envelope is Trousseau's threshold envelope. A local
// data-encryption key (DEK) seals what kube-apiserver hands the plugin
// with AES-256-GCM; the DEK is split k-of-n and each share is wrapped by a
// different KMS backend. The wrapped shares travel in a header beside
// every ciphertext, so any node with any k backends can decrypt, and fewer
// than k learn nothing.
//
// The current DEK is created once (it needs all n backends), kept wrapped
// in a state file, and reused: Encrypt makes no remote call. Decrypt finds
// DEKs in a bounded cache and, on a miss, asks every backend at once and
// combines as soon as k shares fit the header's commitment.
package envelope

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// ErrNotReady reports that no current DEK can be used yet: it has not been
// created (all n backends are needed once) or not unlocked since start
// (k backends are needed).
var ErrNotReady = errors.New("no usable DEK yet")

// Config configures an Envelope.
type Config struct {
	Threshold int
	Backends  []kmsclients.Backend
	// StateDir keeps the wrapped current DEK across restarts. Empty keeps
	// it in memory only (tests, one-shot tools).
	StateDir string
	// MaxAge rotates the DEK when it is older; 0 never rotates on age.
	MaxAge time.Duration
	// CacheSize bounds the DEKs kept unwrapped in memory (default 1024).
	CacheSize int
	// UnwrapTimeout bounds one unwrap of a DEK from the backends, however
	// many Decrypt calls wait on it (default DefaultUnwrapTimeout).
	UnwrapTimeout time.Duration
	// MinThreshold is the lowest threshold a header may carry and still be
	// opened (default: Threshold). A header below it is refused before
	// any backend is asked: otherwise whoever can wrap for one backend
	// could write a 1-of-1 header. Lower it only while raising Threshold,
	// until the data sealed under the old k has been rewritten.
	MinThreshold int
	// MaxUnwraps bounds the DEK unwraps in flight at once (default
	// DefaultMaxUnwraps). Further unwraps wait; past four times as many
	// waiting, Decrypt answers ErrBusy at once.
	MaxUnwraps int
	Logger     *slog.Logger
	Observer   Observer
	Now        func() time.Time
}

// Observer is told what the envelope does, for metrics. Implementations
// must be cheap and safe for concurrent use.
type Observer interface {
	BackendCall(backend, op string, err error, took time.Duration)
	CacheLookup(hit bool)
	Rotation(err error)
	// DEKUnusable: the stored current DEK could not be unlocked although
	// every backend answered, and was set aside for a new one.
	DEKUnusable()
	// Adopted: a newer DEK made by another node became current here.
	Adopted()
}

type nopObserver struct{}

func (nopObserver) BackendCall(string, string, error, time.Duration) {}
func (nopObserver) CacheLookup(bool)                                 {}
func (nopObserver) Rotation(error)                                   {}
func (nopObserver) DEKUnusable()                                     {}
func (nopObserver) Adopted()                                         {}

// dek is an unwrapped DEK, ready to seal and open.
type dek struct {
	dataRoot   []byte      // derives one AES-256-GCM key per message (ciphertext versions 2 and 3)
	aead       cipher.AEAD // the one key of ciphertext version 1, for reading only
	header     []byte      // encoded header that wraps it
	headerHash [32]byte
	parsed     *Header
	keyID      string
	// authenticated: the shares that made it all came from secret-key
	// backends, so k custodians made it (see unlockCurrent, adopt).
	authenticated bool
	// adoptTried: when adopting it was last considered (UnixNano), 0 never.
	adoptTried atomic.Int64
}

// Sealed is what Encrypt returns.
type Sealed struct {
	Ciphertext []byte // small: at most MaxCiphertextSize bytes
	Header     []byte // the wrapped DEK: goes in an annotation, or MarshalCombined
	KeyID      string
}

// Envelope encrypts and decrypts with a threshold-wrapped DEK.
type Envelope struct {
	cfg    Config
	log    *slog.Logger
	obs    Observer
	open   *opener
	probes *probeView
	state  *stateFile
	lookup *lookup

	rotateMu sync.Mutex  // one rotation or unlock at a time
	adopting atomic.Bool // an adoption is under way (see considerAdoption)

	mu            sync.RWMutex
	current       *dek      // nil until created or unlocked
	currentHeader []byte    // the wrapped current DEK, known even while locked
	currentParsed *Header   // parsed currentHeader
	origin        string    // how the current DEK became current (OriginMade, ...)
	since         time.Time // and when
	highestGen    uint32    // the highest generation made here or confirmed for adoption
	replacing     string    // key id of a stored DEK set aside as unusable and not replaced yet (under rotateMu)
}

// New checks cfg and loads the state file if there is one. It makes no
// remote call: Prepare creates or unlocks the current DEK.
func New(cfg Config) (*Envelope, error) {
	if err := split.ValidateThreshold(cfg.Threshold, len(cfg.Backends)); err != nil {
		return nil, err
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UnwrapTimeout <= 0 {
		cfg.UnwrapTimeout = DefaultUnwrapTimeout
	}
	if cfg.MinThreshold == 0 {
		cfg.MinThreshold = cfg.Threshold
	}
	if cfg.MinThreshold < 1 || cfg.MinThreshold > split.MaxShares {
		return nil, fmt.Errorf("minimum threshold must be 1 to %d, got %d", split.MaxShares, cfg.MinThreshold)
	}
	if cfg.MaxUnwraps <= 0 {
		cfg.MaxUnwraps = DefaultMaxUnwraps
	}
	e := &Envelope{cfg: cfg, log: cfg.Logger, obs: cfg.Observer, probes: &probeView{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.obs == nil {
		e.obs = nopObserver{}
	}
	var err error
	if e.open, err = newOpener(cfg, e.log, e.obs, e.probes); err != nil {
		return nil, err
	}
	if e.lookup, err = newLookup(cfg, e.open, e.obs); err != nil {
		return nil, err
	}
	if cfg.StateDir != "" {
		e.state = &stateFile{dir: cfg.StateDir}
		raw, err := e.state.load(e.log)
		if err != nil {
			return nil, err
		}
		if raw != nil {
			h, _ := ParseHeader(raw) // load has parsed it
			e.currentHeader, e.currentParsed = raw, h
			e.log.Info("loaded wrapped DEK from state", "key_id", h.KeyID(), "generation", h.Generation, "created", h.Created)
		}
	}
	if cfg.Threshold == 1 {
		e.log.Warn("threshold is 1: every backend wraps the whole DEK; this gives redundancy but no threshold custody (any single backend can decrypt)")
	}
	return e, nil
}

// Prepare makes the current DEK usable: it creates one if there is none
// (all n backends must answer) or unlocks the stored one (k must answer).
// It returns at once when the DEK is ready.
//
// A stored DEK is adopted only if its header matches the configured
// backends and threshold exactly, and only from k shares that prove who
// made them (see unlockCurrent); otherwise a new DEK replaces it.
func (e *Envelope) Prepare(ctx context.Context) error {
	if e.Ready() {
		return nil
	}
	e.rotateMu.Lock()
	defer e.rotateMu.Unlock()
	e.mu.RLock()
	ready, raw := e.current != nil, e.currentHeader
	e.mu.RUnlock()
	switch {
	case ready:
		return nil
	case raw == nil && e.replacing != "":
		return e.rotateLocked(ctx, "the stored DEK "+e.replacing+" cannot be unlocked and was set aside")
	case raw == nil:
		return e.rotateLocked(ctx, "first start: no DEK yet")
	}
	if reason := e.configChange(); reason != "" {
		return e.replaceForConfig(ctx, raw, reason)
	}
	d, err := e.unlockCurrent(ctx, raw)
	if err != nil {
		return e.replaceUnusable(ctx, raw, err)
	}
	e.setCurrent(d, OriginStored)
	e.log.Info("current DEK unlocked", "key_id", d.keyID)
	return nil
}

// Ready reports whether Encrypt can work.
func (e *Envelope) Ready() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.current != nil
}

// KeyID is the key id of the current DEK, known from the state file even
// before it is unlocked; "" before the first DEK is created.
func (e *Envelope) KeyID() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.currentParsed == nil {
		return ""
	}
	return e.currentParsed.KeyID()
}

// Current describes the current DEK; nil before the first is created.
func (e *Envelope) Current() *Header {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.currentParsed
}

// CurrentHeader is the encoded header of the current DEK; nil before the
// first is created.
func (e *Envelope) CurrentHeader() []byte {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.currentHeader
}

// Threshold is the configured k.
func (e *Envelope) Threshold() int { return e.cfg.Threshold }

// Backends are the configured backends, in config order.
func (e *Envelope) Backends() []kmsclients.Backend { return e.cfg.Backends }

// Encrypt seals plaintext under the current DEK. It makes no remote call.
func (e *Envelope) Encrypt(plaintext []byte) (Sealed, error) {
	if len(plaintext) == 0 || len(plaintext) > MaxPlaintextSize {
		return Sealed{}, fmt.Errorf("plaintext must be 1 to %d bytes, got %d", MaxPlaintextSize, len(plaintext))
	}
	e.mu.RLock()
	d := e.current
	e.mu.RUnlock()
	if d == nil {
		return Sealed{}, fmt.Errorf("%w: %w", ErrNotReady, kmsclients.ErrUnavailable)
	}
	ct, err := d.seal(plaintext)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{Ciphertext: ct, Header: d.header, KeyID: d.keyID}, nil
}

// Decrypt opens a ciphertext made by Encrypt, with the header Encrypt
// returned beside it.
func (e *Envelope) Decrypt(ctx context.Context, ciphertext, header []byte) ([]byte, error) {
	if err := checkCiphertext(ciphertext); err != nil {
		return nil, err
	}
	if len(header) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header is %d bytes, over the limit of %d", ErrInvalid, len(header), MaxHeaderSize)
	}
	d, err := e.dekFor(ctx, header)
	if err != nil {
		return nil, err
	}
	return d.open(ciphertext)
}

// dekFor finds the DEK a header wraps ([lookup]) and offers it to the
// current-DEK lifecycle for adoption.
func (e *Envelope) dekFor(ctx context.Context, raw []byte) (*dek, error) {
	d, err := e.lookup.find(ctx, raw)
	if err != nil {
		return nil, err
	}
	e.considerAdoption(d)
	return d, nil
}

// parseHeader parses a header as [opener.parse] does: refused below the
// threshold floor.
func (e *Envelope) parseHeader(raw []byte) (*Header, error) { return e.open.parse(raw) }

// openHeader recovers, verifies and caches the DEK of a parsed header.
func (e *Envelope) openHeader(ctx context.Context, raw []byte, h *Header, authOnly bool) (*dek, error) {
	d, err := e.open.open(ctx, raw, h, authOnly)
	if err == nil {
		e.lookup.add(d)
	}
	return d, err
}
