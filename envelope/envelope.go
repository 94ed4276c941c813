package envelope

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// ErrNotReady: the current DEK is not created (needs all n backends) or
// not unlocked (needs k) yet.
var ErrNotReady = errors.New("no usable DEK yet")

// Config configures an [Envelope].
type Config struct {
	Threshold int
	Backends  []kmsclients.Backend
	StateDir  string        // keeps the wrapped DEK across restarts; "" keeps it in memory
	MaxAge    time.Duration // rotate when older; 0 never rotates on age
	CacheSize int           // unwrapped DEKs kept (default 1024)
	// UnwrapTimeout bounds one unwrap, however many Decrypts wait on it
	// (default [DefaultUnwrapTimeout]).
	UnwrapTimeout time.Duration
	// MinThreshold is the lowest k a header may carry (default Threshold);
	// below it, whoever wraps for one backend could write a 1-of-1 header.
	// Lower it only while raising Threshold, until old data is rewritten.
	MinThreshold int
	// MaxUnwraps bounds unwraps in flight (default [DefaultMaxUnwraps]);
	// past four times as many waiting, Decrypt returns [ErrBusy].
	MaxUnwraps int
	// Recovery adds the officers' branch to every new DEK (version 2
	// headers); nil makes version 1 headers.
	Recovery *Recovery
	Logger   *slog.Logger
	Observer Observer
	Now      func() time.Time
}

// Observer is told what the envelope does, for metrics. It must be cheap
// and safe for concurrent use.
type Observer interface {
	BackendCall(backend, op string, err error, took time.Duration)
	CacheLookup(hit bool)
	Rotation(err error)
	DEKUnusable() // the stored DEK failed with every backend up; set aside
	Adopted()     // another node's newer DEK became current here
}

type nopObserver struct{}

func (nopObserver) BackendCall(string, string, error, time.Duration) {}
func (nopObserver) CacheLookup(bool)                                 {}
func (nopObserver) Rotation(error)                                   {}
func (nopObserver) DEKUnusable()                                     {}
func (nopObserver) Adopted()                                         {}

// Sealed is what [Envelope.Encrypt] returns.
type Sealed struct {
	Ciphertext []byte // small: at most [MaxCiphertextSize] bytes
	Header     []byte // the wrapped DEK: goes in an annotation, or [MarshalCombined]
	KeyID      string
}

// Envelope encrypts and decrypts with a threshold-wrapped DEK. It is safe
// for concurrent use.
type Envelope struct {
	cfg Config // with defaults; never changed
	// Each part owns its state and lock (docs/development.md).
	probes *probeView
	open   *opener
	lookup *lookup
	life   *lifecycle
}

// New checks cfg and loads the state file if there is one. It makes no
// remote call: [Envelope.Prepare] creates or unlocks the current DEK.
func New(cfg Config) (*Envelope, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	log, obs := cfg.Logger, cfg.Observer
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if obs == nil {
		obs = nopObserver{}
	}
	e := &Envelope{cfg: cfg, probes: &probeView{}}
	if e.open, err = newOpener(cfg, log, obs, e.probes); err != nil {
		return nil, err
	}
	if e.lookup, err = newLookup(cfg, e.open, obs); err != nil {
		return nil, err
	}
	if e.life, err = newLifecycle(cfg, log, obs, e.open, e.lookup.add, e.probes); err != nil {
		return nil, err
	}
	if cfg.Threshold == 1 {
		log.Warn("threshold is 1: every backend wraps the whole DEK; this gives redundancy but no threshold custody (any single backend can decrypt)")
	}
	return e, nil
}

// withDefaults checks cfg and fills in what it leaves zero.
func withDefaults(cfg Config) (Config, error) {
	if err := split.ValidateThreshold(cfg.Threshold, len(cfg.Backends)); err != nil {
		return cfg, err
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
		return cfg, fmt.Errorf("minimum threshold must be 1 to %d, got %d", split.MaxShares, cfg.MinThreshold)
	}
	if cfg.MaxUnwraps <= 0 {
		cfg.MaxUnwraps = DefaultMaxUnwraps
	}
	if cfg.Recovery != nil {
		if err := cfg.Recovery.Validate(); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// Prepare creates the current DEK (all n backends must answer) or unlocks
// the stored one (k must); at once if it is ready. A stored DEK is used
// only if it matches the config and k shares prove who made it; otherwise
// a new DEK replaces it.
func (e *Envelope) Prepare(ctx context.Context) error { return e.life.prepare(ctx) }

// Ready reports whether Encrypt can work.
func (e *Envelope) Ready() bool { return e.life.cur.ready() }

// KeyID is the current DEK's key id, known before it is unlocked; ""
// before the first DEK.
func (e *Envelope) KeyID() string { return e.life.cur.keyID() }

// Current describes the current DEK; nil before the first is created.
func (e *Envelope) Current() *Header {
	_, h := e.life.cur.wrapped()
	return h
}

// CurrentHeader is the encoded header of the current DEK; nil before the
// first is created.
func (e *Envelope) CurrentHeader() []byte {
	raw, _ := e.life.cur.wrapped()
	return raw
}

// CurrentInfo describes the current DEK; zero before there is one.
func (e *Envelope) CurrentInfo() CurrentInfo { return e.life.cur.info() }

// Threshold is the configured k.
func (e *Envelope) Threshold() int { return e.cfg.Threshold }

// Backends are the configured backends, in config order.
func (e *Envelope) Backends() []kmsclients.Backend { return e.cfg.Backends }

// Encrypt seals plaintext under the current DEK. It makes no remote call.
func (e *Envelope) Encrypt(plaintext []byte) (Sealed, error) {
	if len(plaintext) == 0 || len(plaintext) > MaxPlaintextSize {
		return Sealed{}, fmt.Errorf("plaintext must be 1 to %d bytes, got %d", MaxPlaintextSize, len(plaintext))
	}
	d := e.life.cur.get()
	if d == nil {
		return Sealed{}, fmt.Errorf("%w: %w", ErrNotReady, kmsclients.ErrUnavailable)
	}
	ct, err := d.seal(plaintext)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{Ciphertext: ct, Header: d.header, KeyID: d.keyID}, nil
}

// Decrypt opens a ciphertext made by [Envelope.Encrypt], with the header
// it returned beside it.
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

// RetryAdoption tries again to adopt the newest DEK another node made
// that an earlier Decrypt found but could not adopt (a custodian down, an
// adoption already running). The prober calls it at every probe.
func (e *Envelope) RetryAdoption() { e.life.retryAdoption() }

// dekFor finds the header's DEK and offers it for adoption.
func (e *Envelope) dekFor(ctx context.Context, raw []byte) (*dek, error) {
	d, err := e.lookup.find(ctx, raw)
	if err != nil {
		return nil, err
	}
	e.life.considerAdoption(d)
	return d, nil
}
