package envelope

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// Rotate makes a new DEK, wrapped by every configured backend with its
// current key, and makes it current. If any backend cannot wrap its share
// the rotation is abandoned as a whole: the current DEK stays in use and
// nothing is half-done. Data sealed under older DEKs stays readable.
func (e *Envelope) Rotate(ctx context.Context, reason string) error {
	e.rotateMu.Lock()
	defer e.rotateMu.Unlock()
	return e.rotateLocked(ctx, reason)
}

func (e *Envelope) rotateLocked(ctx context.Context, reason string) (err error) {
	defer func() { e.obs.Rotation(err) }()
	e.log.Debug("making a DEK", "reason", reason) // "DEK rotated", "first DEK created", or the caller says how it went
	key := make([]byte, dekSize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	h := &Header{Threshold: e.cfg.Threshold, Created: e.cfg.Now().UTC().Truncate(time.Second)}
	if _, err := rand.Read(h.DEKID[:]); err != nil {
		return err
	}
	h.Generation = e.nextGeneration()
	shares, err := split.Split(key, e.cfg.Threshold, len(e.cfg.Backends))
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range shares {
			s.Wipe()
		}
	}()
	h.Shares, err = e.wrapAll(ctx, h, shares)
	if err != nil {
		// Debug only: callers say it (the prober once per cause).
		e.log.Debug("DEK rotation postponed", "reason", reason, "error", err)
		return fmt.Errorf("rotation postponed: %w", err)
	}
	raw, err := h.seal(key)
	if err != nil {
		return fmt.Errorf("rotation postponed: %w", err)
	}
	d, err := newDEK(key, raw, h)
	if err != nil {
		return err
	}
	if e.state != nil {
		if err := e.state.save(raw, d.keyID, e.cfg.Now()); err != nil {
			return fmt.Errorf("rotation postponed: %w", err)
		}
	}
	d.authenticated = true // made here
	e.lookup.add(d)
	msg := "DEK rotated"
	if e.CurrentInfo().KeyID == "" {
		msg = "first DEK created" // nothing was rotated out
	}
	e.setCurrent(d, OriginMade)
	e.log.Info(msg, "key_id", d.keyID, "generation", h.Generation, "threshold", h.Threshold, "backends", len(h.Shares), "reason", reason)
	return nil
}

// wrapAll has every backend wrap its share, in parallel. All must succeed.
func (e *Envelope) wrapAll(ctx context.Context, h *Header, shares []split.Share) ([]WrappedShare, error) {
	type result struct {
		i   int
		w   kmsclients.Wrapped
		err error
	}
	results := make(chan result, len(shares))
	for i, b := range e.cfg.Backends {
		go func() {
			start := time.Now()
			framed := shares[i].Marshal()
			defer clear(framed)
			w, err := b.Wrap(ctx, framed, h.shareAAD(i+1, len(shares)))
			if err == nil {
				err = kmsclients.CheckWrapped(w)
			}
			e.obs.BackendCall(b.Name(), "wrap", err, time.Since(start))
			results <- result{i, w, err}
		}()
	}
	out := make([]WrappedShare, len(shares))
	var failed []string
	var errs []error
	for range shares {
		r := <-results
		name := e.cfg.Backends[r.i].Name()
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, r.err))
			errs = append(errs, r.err)
			continue
		}
		out[r.i] = WrappedShare{Index: r.i + 1, Backend: name, KeyIdentity: r.w.KeyIdentity, Wrapped: r.w.Ciphertext}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		// Summarize keeps each error for errors.As: /readyz names the
		// backends and kinds, not the text.
		return nil, kmsclients.Summarize(fmt.Sprintf("a new DEK needs all %d backends, %d failed: %s", len(shares), len(failed), strings.Join(failed, "; ")), errs...)
	}
	return out, checkDistinctKeys(e.cfg.Backends, out)
}

// checkDistinctKeys refuses two shares wrapped by the same key: whoever
// holds that key would hold two shares, and k-of-n would not mean k
// custodians. Keys are compared by what the backend says names the key
// material (kmsclients.CustodianKey), so one key reached two ways counts
// once.
func checkDistinctKeys(backends []kmsclients.Backend, shares []WrappedShare) error {
	seen := map[string]string{}
	for i, s := range shares {
		key := kmsclients.CustodianKey(backends[i], s.KeyIdentity)
		if other, dup := seen[key]; dup {
			return fmt.Errorf("backends %s and %s wrap with the same key (%s): each backend needs a key of its own", other, s.Backend, key)
		}
		seen[key] = s.Backend
	}
	return nil
}

// RotationDue says why the current DEK should be replaced, or "" if it
// should not. observed maps backend names to the key identity their last
// probe reported (backends missing from it are not judged).
func (e *Envelope) RotationDue(observed map[string]string) string {
	if observed != nil {
		if e.probes.update(observed) {
			// A backend's key changed (a key file put back, a key
			// restored): headers that failed may open now.
			e.lookup.forgetFailures()
			e.reportAuthenticationGap()
			e.logKeyChanges(observed)
		}
	}
	cur := e.Current()
	if cur == nil {
		return ""
	}
	if reason := e.differsFromConfig(cur, observed); reason != "" {
		return reason
	}
	if e.cfg.MaxAge > 0 {
		if age := e.cfg.Now().Sub(cur.Created); age >= e.cfg.MaxAge {
			return fmt.Sprintf("DEK is %s old (maxAge %s)", age.Truncate(time.Second), e.cfg.MaxAge)
		}
	}
	return ""
}

// logKeyChanges logs, with both key identities, each backend whose probe
// reports another key than the one that wrapped its share of the current
// DEK. The reason RotationDue gives names the backend only: /readyz
// shows it to anyone who reaches the health port.
func (e *Envelope) logKeyChanges(observed map[string]string) {
	cur := e.Current()
	if cur == nil {
		return
	}
	for _, s := range cur.Shares {
		if id := observed[s.Backend]; id != "" && id != s.KeyIdentity {
			e.log.Info("a backend's key is not the one that wrapped its share of the current DEK", "backend", s.Backend, "share_key", s.KeyIdentity, "probe_key", id)
		}
	}
}

// configChange says how the configured threshold or backends differ from
// those of the current DEK, or "".
func (e *Envelope) configChange() string {
	cur := e.Current()
	if cur == nil {
		return ""
	}
	return e.differsFromConfig(cur, nil)
}

// differsFromConfig says how h differs from a DEK this node would make
// now, or "": another threshold, other backends or another order, or a
// key other than the one its probes see (observed, by backend; backends
// missing from it are not judged).
func (e *Envelope) differsFromConfig(h *Header, observed map[string]string) string {
	if h.Threshold != e.cfg.Threshold {
		return fmt.Sprintf("threshold changed from %d to %d", h.Threshold, e.cfg.Threshold)
	}
	names := make([]string, len(h.Shares))
	for i, s := range h.Shares {
		names[i] = s.Backend
	}
	want := make([]string, len(e.cfg.Backends))
	for i, b := range e.cfg.Backends {
		want[i] = b.Name()
	}
	if !slices.Equal(names, want) {
		return fmt.Sprintf("backends changed from [%s] to [%s]", strings.Join(names, " "), strings.Join(want, " "))
	}
	for _, s := range h.Shares {
		if id := observed[s.Backend]; id != "" && id != s.KeyIdentity {
			return fmt.Sprintf("backend %s key changed", s.Backend)
		}
	}
	return ""
}
