package envelope

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// unlockCurrent opens the stored DEK, which will seal new writes: when k
// backends wrap with a secret key, only their shares count. A public-key
// (RSA-OAEP) share could be made by anyone who can write the state file,
// letting them choose the key that seals new Secrets.
func (l *lifecycle) unlockCurrent(ctx context.Context, raw []byte) (*dek, error) {
	h, err := l.open.parse(raw)
	if err != nil {
		return nil, err
	}
	secret, unknown := countSecretKey(l.cfg.Backends)
	if secret < l.cfg.Threshold && secret+unknown >= l.cfg.Threshold {
		// Relaxing on a guess could let a public-key share count: wait.
		return nil, fmt.Errorf("the key type of %d backend(s) is not known yet (no answer so far), so it cannot be told which shares prove who made the stored DEK: %w", unknown, kmsclients.ErrUnavailable)
	}
	return l.openAndKeep(ctx, raw, h, secret >= l.cfg.Threshold)
}

// countSecretKey counts backends known to wrap with a secret key, and
// those not known yet.
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

// AuthenticationGap explains to the operator, when fewer than k backends
// wrap with a secret key, that public keys let others build accepted
// headers; "" otherwise.
func AuthenticationGap(k int, backends []kmsclients.Backend) string {
	var public []string
	for _, b := range backends {
		// Unknown kinds are not reported; decisions use countSecretKey.
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

// reportAuthenticationGap logs a changed [AuthenticationGap]. It runs
// after probes: Vault learns its key type from its first answer.
func (l *lifecycle) reportAuthenticationGap() {
	gap := AuthenticationGap(l.cfg.Threshold, l.cfg.Backends)
	if l.probes.gapChanged(gap) && gap != "" {
		l.log.Warn("public-key backends: " + gap)
	}
}

// replaceUnusable handles a stored DEK that does not unlock. While
// backends are down the error is returned (Prepare retries). With every
// backend answering it never will: the state is set aside for when its
// keys come back, and a new DEK keeps the node from being stuck.
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
	r.obs.DEKUnusable()
	// Forgotten, so later tries do not set it aside again. Its generation
	// is not noted: a state-dir writer could push the next to the end.
	r.cur.forget()
	r.replacing = keyID
	return r.rotate(ctx, "the stored DEK "+keyID+" cannot be unlocked")
}

// replaceForConfig replaces a DEK made for another config with a new one.
// Until all n answer, the old DEK serves only if the config is no stricter
// (same k, none of its backends dropped): adding an unreachable custodian
// does not stop writes, but raising k or dropping a (perhaps compromised)
// custodian stops the old DEK sealing. RotationDue keeps asking.
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

// stricterThan says how the config is stricter than h's (higher k, a
// backend dropped), or "".
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
