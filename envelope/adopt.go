package envelope

import (
	"bytes"
	"context"
	"time"
)

// Several control-plane nodes, each with its own plugin and state dir,
// must report one key_id: kube-apiserver treats data under any other
// key_id as stale. There is no shared store to agree through, but every
// object carries the header of its DEK, and each node's kube-apiserver
// reads (through its watch cache) what the others write. So DEKs are
// totally ordered (generation, then DEK id), and a node that decrypts a
// DEK newer than its own current one adopts it, if it could have made
// that DEK itself. A rotation takes the highest generation seen plus one,
// so nodes move forward together and never back.

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

// newer reports whether a comes after b in the order of DEKs.
func newer(a, b *Header) bool {
	if a.Generation != b.Generation {
		return a.Generation > b.Generation
	}
	return bytes.Compare(a.DEKID[:], b.DEKID[:]) > 0
}

// adoptRetry is how often a newer cached DEK that was not adopted is
// considered again (the node was not ready, a confirming backend was
// down, the save failed, or the probes had not seen its keys yet).
const adoptRetry = 10 * time.Second

// considerAdoption is told of every DEK Decrypt finds. It never delays
// the caller: adoption (a state save, maybe a second unwrap) runs in the
// background, at most once per [adoptRetry] for a DEK. Only a DEK this
// node could have made, confirmed by k secret-key custodians, counts
// towards the generations seen: one built from public keys must not push
// this node's rotations.
func (l *lifecycle) considerAdoption(d *dek) {
	cur := l.cur.get()
	if cur == nil || !newer(d.parsed, cur.parsed) {
		return
	}
	now := l.cfg.Now().UnixNano()
	last := d.adoptTried.Load()
	if last != 0 && time.Duration(now-last) < adoptRetry || !d.adoptTried.CompareAndSwap(last, now) {
		return
	}
	if reason := l.notAdoptable(d.parsed); reason != "" {
		l.log.Debug("a newer DEK was seen but is not adopted", "key_id", d.keyID, "reason", reason)
		return
	}
	if !l.adopting.CompareAndSwap(false, true) {
		return // one adoption at a time; this DEK is tried again later
	}
	go func() {
		defer l.adopting.Store(false)
		r, unlock := l.lock()
		defer unlock()
		r.adopt(d)
	}()
}

// notAdoptable says why this node could not have made h, or "". A DEK
// that anyone who can write etcd may plant becomes the key of new writes
// if adopted, so it must be one this node would make: the configured
// backends in order, the configured threshold, the key identities this
// node's probes see, and a config in which k custodians prove authorship.
func (l *lifecycle) notAdoptable(h *Header) string {
	if reason := l.differsFromConfig(h, l.probes.keys()); reason != "" {
		return "this node would not make it: " + reason
	}
	if secret, _ := countSecretKey(l.cfg.Backends); secret < l.cfg.Threshold {
		return "fewer than k backends are known to wrap with a secret key, so no DEK is proof of authorship"
	}
	return ""
}

// adopt makes d current after checking again. A DEK whose shares for
// Decrypt included a public-key wrap is unwrapped again from secret-key
// backends only.
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
