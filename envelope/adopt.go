package envelope

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"time"
)

// Nodes agree on one key_id by adopting the newest DEK they decrypt
// (docs/how-it-works.md, "Several control-plane nodes").

// Origins of the current DEK, for status and metrics.
const (
	OriginMade    = "made here"
	OriginStored  = "loaded from the state file"
	OriginAdopted = "adopted from another node"
)

// CurrentInfo describes the current DEK for operators.
type CurrentInfo struct {
	KeyID      string
	Generation uint32
	Origin     string    // OriginMade, OriginStored or OriginAdopted
	Since      time.Time // when it became current on this node
}

// newer orders DEKs by generation, then DEK id.
func newer(a, b *Header) bool {
	if a.Generation != b.Generation {
		return a.Generation > b.Generation
	}
	return bytes.Compare(a.DEKID[:], b.DEKID[:]) > 0
}

// adoptRetry is how often a newer DEK not adopted is considered again.
const adoptRetry = 10 * time.Second

// considerAdoption is told of every DEK Decrypt finds. Adoption (a save,
// maybe an unwrap) runs in the background, at most once per [adoptRetry]
// for a DEK. Only a confirmed DEK counts towards the generations seen: one
// built from public keys must not push this node's rotations.
func (l *lifecycle) considerAdoption(d *dek) {
	cur := l.cur.get()
	if cur != nil && !newer(d.parsed, cur.parsed) {
		l.candidate.CompareAndSwap(d, nil)
		return
	}
	l.keepCandidate(d)
	if cur == nil {
		return
	}
	now := l.cfg.Now().UnixNano()
	last := d.adoptTried.Load()
	if last != 0 && time.Duration(now-last) < adoptRetry || !d.adoptTried.CompareAndSwap(last, now) {
		return
	}
	if reason := l.notAdoptable(d.header, d.parsed); reason != "" {
		l.log.Debug("a newer DEK was seen but is not adopted", "key_id", d.keyID, "reason", reason)
		return
	}
	if !l.adopting.CompareAndSwap(false, true) {
		return // one at a time; tried again later
	}
	go func() {
		defer l.adopting.Store(false)
		r, unlock := l.lock()
		defer unlock()
		r.adopt(d)
	}()
}

// keepCandidate remembers d for [lifecycle.retryAdoption] if it is the
// newest confirmed DEK seen: kube-apiserver caches what it decrypted, so
// the read that brought d may be the only one. Unconfirmed DEKs are not
// kept, so one built from public keys cannot hold the place.
func (l *lifecycle) keepCandidate(d *dek) {
	for d.authenticated {
		old := l.candidate.Load()
		if old != nil && !newer(d.parsed, old.parsed) {
			return
		}
		if l.candidate.CompareAndSwap(old, d) {
			go l.record()
			return
		}
	}
}

// retryAdoption considers again the newest DEK seen and not adopted,
// before a restart or since.
func (l *lifecycle) retryAdoption() {
	if w := l.restored.Load(); w != nil {
		l.reopen(w)
	}
	if d := l.candidate.Load(); d != nil {
		l.considerAdoption(d)
	}
}

// record writes the candidate to the state dir, so that a restart before
// its adoption does not forget it.
func (l *lifecycle) record() {
	if l.state == nil {
		return
	}
	l.recordMu.Lock()
	defer l.recordMu.Unlock()
	d := l.candidate.Load()
	if d == nil || l.recorded != nil && bytes.Equal(d.header, l.recorded.raw) {
		return
	}
	if cur := l.cur.get(); cur != nil && !newer(d.parsed, cur.parsed) {
		return
	}
	if err := l.state.saveCandidate(d.header, d.keyID); err != nil {
		l.log.Warn("could not record a newer DEK to adopt in the state dir; a restart before its adoption forgets it", "key_id", d.keyID, "error", err)
		return
	}
	l.recorded = &wrappedDEK{raw: d.header, parsed: d.parsed}
}

// forgetRecorded removes the recorded candidate once cur is as new.
func (l *lifecycle) forgetRecorded(cur *Header) {
	l.recordMu.Lock()
	defer l.recordMu.Unlock()
	if l.recorded == nil || newer(l.recorded.parsed, cur) {
		return
	}
	l.state.dropCandidate()
	l.recorded = nil
}

// reopen opens a candidate restored from the state dir, from secret-key
// backends only (the state dir is no proof of authorship), and offers it
// for adoption; one no newer than the current DEK is dropped.
func (l *lifecycle) reopen(w *wrappedDEK) {
	cur := l.cur.get()
	if cur == nil {
		return // tried once the current DEK is unlocked
	}
	if !newer(w.parsed, cur.parsed) {
		l.restored.CompareAndSwap(w, nil)
		l.forgetRecorded(cur.parsed)
		return
	}
	now := l.cfg.Now().UnixNano()
	last := w.tried.Load()
	if last != 0 && time.Duration(now-last) < adoptRetry || !w.tried.CompareAndSwap(last, now) {
		return
	}
	if !l.adopting.CompareAndSwap(false, true) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.UnwrapTimeout)
		defer cancel()
		d, err := l.openAndKeep(ctx, w.raw, w.parsed, true)
		l.adopting.Store(false)
		if err != nil {
			if msg := err.Error(); msg != w.lastErr {
				w.lastErr = msg
				l.log.Warn("a newer DEK seen before the restart is not confirmed by k secret-key backends yet; not adopted (tried again at the next probe)", "key_id", w.parsed.KeyID(), "error", err)
			}
			return
		}
		l.restored.CompareAndSwap(w, nil)
		l.considerAdoption(d)
	}()
}

// notAdoptable says why this node could not have made h, or "". An
// adopted DEK seals new writes and anyone who writes etcd can plant one,
// so it must match config and probed keys, with k custodians proving it.
func (l *lifecycle) notAdoptable(raw []byte, h *Header) string {
	if reason := l.differsFromConfig(h, l.probes.keys()); reason != "" {
		return "this node would not make it: " + reason
	}
	if rec := l.cfg.Recovery; rec != nil {
		if sig := CheckSignature(raw, h, []ed25519.PublicKey{rec.SigningKey.Public}); sig != SignatureValid {
			return "its header signature is " + sig.String()
		}
	}
	if secret, _ := countSecretKey(l.cfg.Backends); secret < l.cfg.Threshold {
		return "fewer than k backends are known to wrap with a secret key, so no DEK is proof of authorship"
	}
	return ""
}

// adopt makes d current after checking again; a DEK not authenticated is
// unwrapped again from secret-key backends only.
func (r *rotation) adopt(d *dek) {
	if _, cur := r.cur.wrapped(); cur == nil || !newer(d.parsed, cur) {
		return
	}
	if !d.authenticated {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.UnwrapTimeout)
		defer cancel()
		ad, err := r.openAndKeep(ctx, d.header, d.parsed, true)
		if err != nil {
			r.log.Warn("a newer DEK was seen but k secret-key backends did not confirm it; not adopted (tried again later)", "key_id", d.keyID, "error", err)
			return
		}
		ad.adoptTried.Store(d.adoptTried.Load())
		d = ad
	}
	r.cur.noteGeneration(d.parsed.Generation)
	if r.state != nil {
		if err := r.state.save(d.header, d.keyID, r.cfg.Now()); err != nil {
			r.log.Warn("a newer DEK was seen but could not be saved; not adopted (tried again later)", "key_id", d.keyID, "error", err)
			return
		}
	}
	old := r.cur.keyID()
	r.setCurrent(d, OriginAdopted)
	r.obs.Adopted()
	r.log.Info("adopted a newer DEK made by another node", "key_id", d.keyID, "generation", d.parsed.Generation, "previous_key_id", old)
}
