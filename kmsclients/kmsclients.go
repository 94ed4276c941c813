// Package kmsclients defines the one small interface every KMS backend of
// Trousseau implements, and the one error type (Error, made by a Source)
// with which they report the kinds of failure.
//
// A backend wraps and unwraps one share of a data-encryption key. It never
// sees the key itself, only its share, and each wrapped share is bound to
// associated data (the DEK it belongs to and the share's index) so that a
// wrapped share cannot be replayed as another.
//
// Backends live one per package below this one (local, vault, awskms, ...).
package kmsclients

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"
)

// Wrapped is a share as one backend protected it.
type Wrapped struct {
	Ciphertext []byte
	// KeyIdentity names the key and key version that wrapped the share
	// (e.g. "vault:transit/trousseau:v3"). It is recorded next to the
	// wrapped share and handed back to Unwrap. It is not secret.
	KeyIdentity string
}

// Backend wraps and unwraps shares with one KMS key.
//
// Every method honours ctx's deadline and cancellation: a backend adds no
// hidden timeouts of its own. Implementations must be safe for concurrent
// use.
type Backend interface {
	// Name is the operator's name for this backend ([a-z0-9-], unique in a config).
	Name() string
	// Wrap protects share under the backend's current key, bound to aad.
	Wrap(ctx context.Context, share, aad []byte) (Wrapped, error)
	// Unwrap recovers a share that Wrap protected. keyIdentity is what Wrap
	// reported; aad must equal what Wrap was given.
	Unwrap(ctx context.Context, w Wrapped, aad []byte) ([]byte, error)
	// Probe is a cheap health check that reports the identity of the key
	// that Wrap would use now, so that a rotated backend key is noticed.
	Probe(ctx context.Context) (keyIdentity string, err error)
	// Close releases the backend's resources.
	Close() error
}

// Limits on what a backend may return, so that a lying or broken backend
// cannot make the header grow without bound.
const (
	MaxWrappedSize     = 4096
	MaxKeyIdentitySize = 512
	MaxNameSize        = 63
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName checks a backend name: 1 to 63 of [a-z0-9-], starting and
// ending with a letter or digit.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameSize || !nameRE.MatchString(name) {
		return fmt.Errorf("invalid backend name %q: want 1 to %d characters of [a-z0-9-], starting and ending with a letter or digit", name, MaxNameSize)
	}
	return nil
}

// CheckWrapped validates what a backend returned from Wrap.
func CheckWrapped(w Wrapped) error {
	switch {
	case len(w.Ciphertext) == 0:
		return errors.New("backend returned an empty wrapped share")
	case len(w.Ciphertext) > MaxWrappedSize:
		return fmt.Errorf("backend returned a wrapped share of %d bytes (limit %d)", len(w.Ciphertext), MaxWrappedSize)
	case w.KeyIdentity == "":
		return errors.New("backend returned an empty key identity")
	case len(w.KeyIdentity) > MaxKeyIdentitySize:
		return fmt.Errorf("backend returned a key identity of %d bytes (limit %d)", len(w.KeyIdentity), MaxKeyIdentitySize)
	}
	return nil
}

// CloseAll closes every backend; errors on close are of no use to callers
// that are shutting down.
func CloseAll(backends []Backend) {
	for _, b := range backends {
		b.Close()
	}
}

// ProbeResult is what one backend's Probe answered.
type ProbeResult struct {
	KeyIdentity string
	Err         error
	Took        time.Duration
}

// ProbeAll probes every backend at once, each under timeout (and ctx),
// and returns their answers in the same order.
func ProbeAll(ctx context.Context, backends []Backend, timeout time.Duration) []ProbeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := make([]ProbeResult, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			id, err := b.Probe(ctx)
			out[i] = ProbeResult{KeyIdentity: id, Err: err, Took: time.Since(start)}
		}()
	}
	wg.Wait()
	return out
}

// PublicWrapper is implemented by backends that may wrap with a public key
// (RSA-OAEP). Anyone who holds that public key can make a wrapped share
// the backend will unwrap, so such a share keeps the share secret but
// proves nothing about who made it: the envelope does not count it as
// proof that a DEK was made by Trousseau (see IsPublicWrap).
type PublicWrapper interface {
	// PublicWrap reports whether shares this backend unwraps could have
	// been wrapped by anyone holding its public key.
	PublicWrap() bool
}

// IsPublicWrap reports whether b's wrapped shares could have been made by
// anyone holding a public key. Backends that do not implement
// PublicWrapper wrap with a secret key.
func IsPublicWrap(b Backend) bool {
	p, ok := b.(PublicWrapper)
	return ok && p.PublicWrap()
}

// WrapKindKnower is implemented by backends that learn from the KMS
// whether they wrap with a public key (a Vault transit key's type): until
// they know, PublicWrap answers true, and WrapKindKnown false, so that no
// decision that needs the answer is taken on a guess.
type WrapKindKnower interface {
	WrapKindKnown() bool
}

// WrapKindKnown reports whether IsPublicWrap(b) is known for sure.
func WrapKindKnown(b Backend) bool {
	k, ok := b.(WrapKindKnower)
	return !ok || k.WrapKindKnown()
}

// CustodianKeyer is implemented by backends whose key identities can name
// one key in more than one way (one Vault transit key through two
// addresses, an AWS multi-Region key and its replica). CustodianKey
// returns a name of the key material itself, so that two backends on one
// key are seen as one custodian.
type CustodianKeyer interface {
	CustodianKey(keyIdentity string) string
}

// CustodianKey is the canonical name of the key behind keyIdentity: what
// b's CustodianKeyer says, or keyIdentity itself.
func CustodianKey(b Backend, keyIdentity string) string {
	if c, ok := b.(CustodianKeyer); ok {
		return c.CustodianKey(keyIdentity)
	}
	return keyIdentity
}
