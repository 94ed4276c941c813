package envelope

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// unlockCurrent opens the stored current DEK. It will seal every new
// write, so it needs more than Decrypt does: when k or more configured
// backends wrap with a secret key, only their shares are combined. A share
// wrapped with a public key (RSA-OAEP) keeps the share secret but could
// have been made by anyone who holds that key and can write the state
// file; counting it would let them choose the key that seals new Secrets.
func (l *lifecycle) unlockCurrent(ctx context.Context, raw []byte) (*dek, error) {
	h, err := l.open.parse(raw)
	if err != nil {
		return nil, err
	}
	secret, unknown := countSecretKey(l.cfg.Backends)
	if secret < l.cfg.Threshold && secret+unknown >= l.cfg.Threshold {
		// Whether shares prove authorship depends on key types not read
		// yet: relaxing the check on a guess would let a public-key
		// share count. Wait for the backends to answer.
		return nil, fmt.Errorf("the key type of %d backend(s) is not known yet (no answer so far), so it cannot be told which shares prove who made the stored DEK: %w", unknown, kmsclients.ErrUnavailable)
	}
	return l.openAndKeep(ctx, raw, h, secret >= l.cfg.Threshold)
}

// countSecretKey counts the backends known to wrap with a secret key, and
// those whose kind of wrap is not known yet.
func countSecretKey(backends []kmsclients.Backend) (secret, unknown int) {
	for _, b := range backends {
		switch {
		case !kmsclients.WrapKindKnown(b):
			unknown++
		case !kmsclients.IsPublicWrap(b):
			secret++
		}
	}
	return secret, unknown
}

// AuthenticationGap says, when fewer than k of the backends wrap with a
// secret key, what that means for the operator; "" otherwise. Shares
// wrapped with a public key prove nothing about who made a DEK, so with
// k or more such backends whoever holds their public keys and can write
// etcd or the state dir can make headers the plugin accepts.
func AuthenticationGap(k int, backends []kmsclients.Backend) string {
	var public []string
	for _, b := range backends {
		// A kind of wrap not known yet is not reported as public here: this
		// is what the operator is told; decisions use countSecretKey.
		if kmsclients.WrapKindKnown(b) && kmsclients.IsPublicWrap(b) {
			public = append(public, b.Name())
		}
	}
	if len(backends)-len(public) >= k {
		return ""
	}
	return fmt.Sprintf("only %d of %d backends wrap with a secret key, fewer than the threshold %d: %s wrap with public keys (RSA), "+
		"so anyone holding those public keys and %d secret-key backend(s) can build a DEK this plugin accepts; "+
		"with write access to etcd they can make stored objects decrypt to values they chose, and with write access to the state dir "+
		"they can choose the DEK that seals new writes. The nodes of an HA control plane also do not adopt each other's DEKs in this "+
		"configuration (no DEK proves who made it), so each reports its own key_id. Use AES (symmetric) keys, or more secret-key backends",
		len(backends)-len(public), len(backends), k, strings.Join(public, ", "), max(0, k-len(public)))
}

// reportAuthenticationGap logs AuthenticationGap once each time it
// changes. It runs after probes, since some backends (Vault) learn their
// key type only from their first answer.
func (l *lifecycle) reportAuthenticationGap() {
	gap := AuthenticationGap(l.cfg.Threshold, l.cfg.Backends)
	if l.probes.gapChanged(gap) && gap != "" {
		l.log.Warn("public-key backends: " + gap)
	}
}

// replaceUnusable decides what to do when the stored DEK does not unlock.
// While backends are down, waiting may help: the error is returned and
// Prepare is tried again later. When every backend answered and the DEK
// still does not unlock (key files replaced, the header damaged), it
// never will: a new DEK is made so that the node is not stuck, and the
// old state is kept aside for the day its keys come back.
func (r *rotation) replaceUnusable(ctx context.Context, cause error) error {
	if !errors.Is(cause, ErrInvalid) || errors.Is(cause, kmsclients.ErrUnavailable) || ctx.Err() != nil {
		return fmt.Errorf("unlock current DEK: %w", cause)
	}
	keyID := r.cur.keyID()
	r.log.Error("the stored current DEK cannot be unlocked although every backend answered; making a new DEK. "+
		"Data sealed under the old DEK stays unreadable until the keys that wrapped its shares are back",
		"key_id", keyID, "cause", cause.Error())
	if r.state != nil {
		aside, err := r.state.setAside(r.cfg.Now())
		if err != nil {
			return fmt.Errorf("unlock current DEK: %w; and the state could not be set aside: %w", cause, err)
		}
		r.log.Error("the unusable DEK's state is kept", "key_id", keyID, "file", aside)
	}
	// Once set aside, it is forgotten here: if the new DEK cannot be made
	// now, later tries make one without setting the old aside again.
	r.obs.DEKUnusable()
	// Its generation is not noted: nothing proves the header genuine, and
	// a state-dir writer could otherwise push the next one to the end of
	// the order.
	r.cur.forget()
	r.replacing = keyID
	return r.rotate(ctx, "the stored DEK "+keyID+" cannot be unlocked")
}

// replaceForConfig replaces a stored DEK made for another backend set or
// threshold with a new one from all n backends. Until all n answer, the
// stored DEK serves only if the config is no stricter than its own (the
// same k, every backend holding a share still configured) and it unlocks
// as a matching one would: adding an unreachable custodian does not stop
// writes, while raising k or dropping a (perhaps compromised) custodian
// seals no more writes under the old DEK. RotationDue keeps asking for
// the new DEK.
func (r *rotation) replaceForConfig(ctx context.Context, raw []byte, reason string) error {
	err := r.rotate(ctx, reason)
	if err == nil {
		return nil
	}
	_, h := r.cur.wrapped()
	if stricter := r.stricterThan(h); stricter != "" {
		r.log.Error("the stored DEK was made for a weaker configuration and no new DEK could be made yet: no writes until all configured backends answer",
			"reason", stricter, "key_id", h.KeyID(), "error", err)
		return fmt.Errorf("the stored DEK %s was made for a weaker configuration (%s) and a new one needs every configured backend: %w", h.KeyID(), stricter, err)
	}
	d, uerr := r.unlockCurrent(ctx, raw)
	if uerr != nil {
		return err
	}
	r.setCurrent(d, OriginStored)
	r.log.Warn("the stored DEK does not match the configuration and no new DEK could be made yet; it serves until one can",
		"reason", reason, "key_id", d.keyID, "error", err)
	return nil
}

// stricterThan says how the configuration is stricter than the one h was
// made for, or "": a higher threshold, or a backend of h no longer
// configured.
func (l *lifecycle) stricterThan(h *Header) string {
	if h.Threshold < l.cfg.Threshold {
		return fmt.Sprintf("threshold raised from %d to %d", h.Threshold, l.cfg.Threshold)
	}
	var gone []string
	for _, s := range h.Shares {
		if !slices.ContainsFunc(l.cfg.Backends, func(b kmsclients.Backend) bool { return b.Name() == s.Backend }) {
			gone = append(gone, s.Backend)
		}
	}
	if len(gone) > 0 {
		return "backends removed: " + strings.Join(gone, ", ")
	}
	return ""
}
