package recovery

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Keyring is the decrypt-only envelope recovery runs with: every backend
// of a config that could be built, whatever their number. The threshold
// that counts is each stored header's own; the config's is not used.
type Keyring struct {
	Envelope *envelope.Envelope
	backends []kmsclients.Backend
	status   []*backendState
	byName   map[string]*backendState
}

// BackendStatus is how one configured backend did.
type BackendStatus struct {
	Name string
	// Err is why it could not be built; it was skipped.
	Err error
	// ProbeErr is what its health probe said at start, if it failed. The
	// backend is still asked for shares: a probe can fail where an unwrap
	// works (a permission on key metadata only).
	ProbeErr    error
	KeyIdentity string
	// Unwraps and UnwrapFailures count share unwraps it was asked for;
	// UnwrapsCancelled those called off because k others answered first
	// (or the run was interrupted): no failure of the backend.
	Unwraps, UnwrapFailures, UnwrapsCancelled int64
}

type backendState struct {
	BackendStatus
	ok, failed, cancelled atomic.Int64
}

// OpenKeyring builds each backend of cfg on its own, skipping (and
// reporting) those that fail, probes them in parallel, and returns an
// envelope over the rest. It fails only if none could be built.
func OpenKeyring(ctx context.Context, cfg *config.Config, probeTimeout time.Duration) (*Keyring, error) {
	kr := &Keyring{byName: map[string]*backendState{}}
	var errs []error
	for i, b := range cfg.Backends {
		st := &backendState{BackendStatus: BackendStatus{Name: b.Name}}
		kr.status = append(kr.status, st)
		kr.byName[b.Name] = st
		built, err := (&config.Config{Backends: []config.Backend{b}}).BuildBackends(ctx)
		if err != nil {
			// BuildBackends names the backend as backends[0]: report the
			// error it wraps under the real index.
			if inner := errors.Unwrap(err); inner != nil {
				err = inner
			}
			st.Err = err
			errs = append(errs, fmt.Errorf("backends[%d] (%s): %w", i, b.Name, err))
			continue
		}
		kr.backends = append(kr.backends, built[0])
	}
	if len(kr.backends) == 0 {
		return nil, fmt.Errorf("no backend of the config could be built: %w", errors.Join(errs...))
	}
	kr.probe(ctx, probeTimeout)
	env, err := envelope.New(envelope.Config{
		// k = 1 lets any subset of the configured backends be used; the
		// quorum each DEK needs is in its header.
		Threshold: 1,
		// But no header below the config's floor: with a lower k, whoever
		// holds fewer custodians could have made it.
		MinThreshold: cfg.ThresholdFloor(),
		Backends:     kr.backends,
		CacheSize:    1 << 16,
		Observer:     (*keyringObserver)(kr),
		// The Decrypter bounds each header's wait (--unwrap-timeout);
		// this only bounds the unwrap left running after it gives up.
		UnwrapTimeout: 10 * time.Minute,
	})
	if err != nil {
		kr.Close()
		return nil, err
	}
	kr.Envelope = env
	return kr, nil
}

func (kr *Keyring) probe(ctx context.Context, timeout time.Duration) {
	if timeout <= 0 {
		timeout = kmsclients.DefaultCommandProbeTimeout
	}
	for i, r := range kmsclients.ProbeAll(ctx, kr.backends, timeout) {
		st := kr.byName[kr.backends[i].Name()]
		st.KeyIdentity, st.ProbeErr = r.KeyIdentity, r.Err
	}
}

// Status reports every configured backend, in config order.
func (kr *Keyring) Status() []BackendStatus {
	out := make([]BackendStatus, len(kr.status))
	for i, st := range kr.status {
		out[i] = st.BackendStatus
		out[i].Unwraps, out[i].UnwrapFailures, out[i].UnwrapsCancelled = st.ok.Load(), st.failed.Load(), st.cancelled.Load()
	}
	return out
}

// Decrypt implements Envelope.
func (kr *Keyring) Decrypt(ctx context.Context, ciphertext, header []byte) ([]byte, error) {
	return kr.Envelope.Decrypt(ctx, ciphertext, header)
}

// Close releases the backends.
func (kr *Keyring) Close() {
	for _, b := range kr.backends {
		b.Close()
	}
}

// keyringObserver counts unwraps per backend.
type keyringObserver Keyring

func (o *keyringObserver) BackendCall(backend, op string, err error, _ time.Duration) {
	st := o.byName[backend]
	if st == nil || op != "unwrap" {
		return
	}
	switch {
	case errors.Is(err, context.Canceled):
		st.cancelled.Add(1)
	case err != nil:
		st.failed.Add(1)
	default:
		st.ok.Add(1)
	}
}

func (*keyringObserver) CacheLookup(bool) {}
func (*keyringObserver) Rotation(error)   {}
func (*keyringObserver) DEKUnusable()     {}
func (*keyringObserver) Adopted()         {}
