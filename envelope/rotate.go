package envelope

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// Rotate makes a new DEK, wrapped by every backend's current key, and
// makes it current. If any backend fails, nothing changes. Data sealed
// under older DEKs stays readable.
func (e *Envelope) Rotate(ctx context.Context, reason string) error {
	r, unlock := e.life.lock()
	defer unlock()
	return r.rotate(ctx, reason)
}

func (r *rotation) rotate(ctx context.Context, reason string) (err error) {
	defer func() { r.obs.Rotation(err) }()
	r.log.Debug("making a DEK", "reason", reason) // the outcome is logged below or by the caller
	d, err := r.makeDEK(ctx, reason)
	if err != nil {
		return err
	}
	if r.state != nil {
		if err := r.state.save(d.header, d.keyID, r.cfg.Now()); err != nil {
			return fmt.Errorf("rotation postponed: %w", err)
		}
	}
	d.authenticated = true // made here
	r.keep(d)
	msg := "DEK rotated"
	if !r.cur.ready() {
		msg = "first DEK created"
	}
	r.setCurrent(d, OriginMade)
	h := d.parsed
	r.log.Info(msg, "key_id", d.keyID, "generation", h.Generation, "threshold", h.Threshold, "backends", len(h.Shares), "reason", reason)
	return nil
}

// makeDEK makes a DEK of the next generation, wrapped by every backend.
func (l *lifecycle) makeDEK(ctx context.Context, reason string) (*dek, error) {
	key, h, err := l.wrapNewSecret(ctx, l.cur.nextGeneration())
	defer clear(key)
	if err != nil {
		// Debug: callers log it (the prober once per cause).
		l.log.Debug("DEK rotation postponed", "reason", reason, "error", err)
		return nil, fmt.Errorf("rotation postponed: %w", err)
	}
	var signer ed25519.PrivateKey
	if rec := l.cfg.Recovery; rec != nil {
		if signer, err = l.signer(ctx); err != nil {
			return nil, fmt.Errorf("rotation postponed: %w", err)
		}
		if h.Recovery, err = sealOfficers(key, h, rec, signer); err != nil {
			return nil, fmt.Errorf("rotation postponed: officers' shares: %w", err)
		}
	}
	raw, err := h.seal(key, signer)
	if err != nil {
		return nil, fmt.Errorf("rotation postponed: %w", err)
	}
	return newDEK(key, raw, h)
}

// wrapNewSecret makes a random secret (a DEK, or a signing key's) and
// its header of generation, split k-of-n and wrapped by every backend.
// The header is not sealed yet; the caller clears the secret.
func (l *lifecycle) wrapNewSecret(ctx context.Context, generation uint32) ([]byte, *Header, error) {
	key := make([]byte, dekSize)
	h := &Header{Threshold: l.cfg.Threshold, Created: l.cfg.Now().UTC().Truncate(time.Second), Generation: generation}
	if _, err := rand.Read(key); err != nil {
		return key, nil, err
	}
	if _, err := rand.Read(h.DEKID[:]); err != nil {
		return key, nil, err
	}
	shares, err := split.Split(key, l.cfg.Threshold, len(l.cfg.Backends))
	if err != nil {
		return key, nil, err
	}
	defer func() {
		for _, s := range shares {
			s.Wipe()
		}
	}()
	h.Shares, err = l.wrapAll(ctx, h, shares)
	return key, h, err
}

// wrapAll has every backend wrap its share, in parallel. All must succeed.
func (l *lifecycle) wrapAll(ctx context.Context, h *Header, shares []split.Share) ([]WrappedShare, error) {
	type result struct {
		i   int
		w   kmsclients.Wrapped
		err error
	}
	results := make(chan result, len(shares))
	for i, b := range l.cfg.Backends {
		go func() {
			start := time.Now()
			framed := shares[i].Marshal()
			defer clear(framed)
			w, err := b.Wrap(ctx, framed, h.shareAAD(i+1, len(shares)))
			if err == nil {
				err = kmsclients.CheckWrapped(w)
			}
			l.obs.BackendCall(b.Name(), "wrap", err, time.Since(start))
			results <- result{i, w, err}
		}()
	}
	out := make([]WrappedShare, len(shares))
	var failed []string
	var errs []error
	for range shares {
		r := <-results
		name := l.cfg.Backends[r.i].Name()
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, r.err))
			errs = append(errs, r.err)
			continue
		}
		out[r.i] = WrappedShare{Index: r.i + 1, Backend: name, KeyIdentity: r.w.KeyIdentity, Wrapped: r.w.Ciphertext}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		// Summarize keeps each error for errors.As (/readyz shows kinds).
		return nil, kmsclients.Summarize(fmt.Sprintf("a new DEK needs all %d backends, %d failed: %s", len(shares), len(failed), strings.Join(failed, "; ")), errs...)
	}
	return out, checkDistinctKeys(l.cfg.Backends, out)
}

// checkDistinctKeys refuses two shares under one key: its holder would
// hold two. [kmsclients.CustodianKey] counts a key reached two ways once.
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

// RotationDue says why the current DEK should be replaced, or "".
// observed maps backends to the key identity their probe saw (missing
// ones are not judged).
func (e *Envelope) RotationDue(observed map[string]string) string {
	if observed != nil && e.probes.update(observed) {
		e.lookup.forgetFailures()
		e.life.reportAuthenticationGap()
		e.life.logKeyChanges(observed)
	}
	return e.life.rotationDue(observed)
}

// rotationDue is [Envelope.RotationDue] once the probe's view is noted.
func (l *lifecycle) rotationDue(observed map[string]string) string {
	_, cur := l.cur.wrapped()
	if cur == nil {
		return ""
	}
	if reason := l.differsFromConfig(cur, observed); reason != "" {
		return reason
	}
	if l.cfg.MaxAge > 0 {
		if age := l.cfg.Now().Sub(cur.Created); age >= l.cfg.MaxAge {
			return fmt.Sprintf("DEK is %s old (maxAge %s)", age.Truncate(time.Second), l.cfg.MaxAge)
		}
	}
	return ""
}

// logKeyChanges logs both key identities of each backend whose key
// changed; RotationDue's reason names only the backend, since /readyz
// shows it to anyone who reaches the health port.
func (l *lifecycle) logKeyChanges(observed map[string]string) {
	_, cur := l.cur.wrapped()
	if cur == nil {
		return
	}
	for _, s := range cur.Shares {
		if id := observed[s.Backend]; id != "" && id != s.KeyIdentity {
			l.log.Info("a backend's key is not the one that wrapped its share of the current DEK", "backend", s.Backend, "share_key", s.KeyIdentity, "probe_key", id)
		}
	}
}

// configChange says how the config differs from the current DEK's, or "".
func (l *lifecycle) configChange() string {
	_, cur := l.cur.wrapped()
	if cur == nil {
		return ""
	}
	return l.differsFromConfig(cur, nil)
}

// differsFromConfig says how h differs from a DEK this node would make
// now (threshold, backends and order, observed keys), or "".
func (l *lifecycle) differsFromConfig(h *Header, observed map[string]string) string {
	if h.Threshold != l.cfg.Threshold {
		return fmt.Sprintf("threshold changed from %d to %d", h.Threshold, l.cfg.Threshold)
	}
	names := make([]string, len(h.Shares))
	for i, s := range h.Shares {
		names[i] = s.Backend
	}
	want := make([]string, len(l.cfg.Backends))
	for i, b := range l.cfg.Backends {
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
	return l.recoveryDiffers(h)
}

// recoveryDiffers says how h's officers' branch differs from the
// config's, or "".
func (l *lifecycle) recoveryDiffers(h *Header) string {
	rec, rs := l.cfg.Recovery, h.Recovery
	switch {
	case rec == nil && rs == nil:
		return ""
	case rec == nil:
		return "the officers' recovery branch was removed"
	case rs == nil:
		return "an officers' recovery branch was added"
	case rs.Threshold != rec.Threshold || len(rs.Shares) != len(rec.Officers):
		return fmt.Sprintf("officers changed from %d of %d to %d of %d", rs.Threshold, len(rs.Shares), rec.Threshold, len(rec.Officers))
	case rs.SignerID != SignerID(rec.SigningKey.Public):
		return "the header signing key changed"
	}
	for i, o := range rec.Officers {
		if s := rs.Shares[i]; s.Officer != o.Name || s.RecipientID != RecipientID(o.Recipient) {
			return fmt.Sprintf("officer %d changed from %s to %s or its recipient changed", i+1, s.Officer, o.Name)
		}
	}
	return ""
}
