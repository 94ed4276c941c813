// Package kmsclients defines [Backend], which every KMS backend (one
// package below this one each) implements, and [Error], made by a
// [Source], with which they report failures.
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
	// KeyIdentity names the wrapping key and version; not secret.
	KeyIdentity string
}

// Backend wraps shares with one KMS key. Methods honour ctx and add no
// hidden timeouts; implementations are safe for concurrent use.
type Backend interface {
	// Name is the operator's name for the backend (see [ValidateName]).
	Name() string
	// Wrap protects share under the current key, bound to aad so it
	// cannot be replayed as another share.
	Wrap(ctx context.Context, share, aad []byte) (Wrapped, error)
	// Unwrap recovers a share Wrap protected; aad must be Wrap's.
	Unwrap(ctx context.Context, w Wrapped, aad []byte) ([]byte, error)
	// Probe is a cheap health check returning the key identity Wrap
	// would use now, so that rotation is noticed.
	Probe(ctx context.Context) (keyIdentity string, err error)
	Close() error
}

// Limits on what a backend may return, so a liar cannot grow the header.
const (
	MaxWrappedSize     = 4096
	MaxKeyIdentitySize = 512
	MaxNameSize        = 63
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName checks a backend name: 1 to [MaxNameSize] of [a-z0-9-],
// starting and ending with a letter or digit.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameSize || !nameRE.MatchString(name) {
		return fmt.Errorf("invalid backend name %q: want 1 to %d characters of [a-z0-9-], starting and ending with a letter or digit", name, MaxNameSize)
	}
	return nil
}

// CheckWrapped validates what Wrap returned.
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

// CloseAll closes every backend, ignoring errors: callers are shutting down.
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

// ProbeAll probes backends in parallel under timeout, answers in order.
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

// PublicWrapper is implemented by backends that may wrap with a public
// key (RSA-OAEP), whose shares anyone could make: the envelope does not
// count them as proof that Trousseau made a DEK.
type PublicWrapper interface {
	PublicWrap() bool
}

// IsPublicWrap reports b's [PublicWrapper] answer, false without one.
func IsPublicWrap(b Backend) bool {
	p, ok := b.(PublicWrapper)
	return ok && p.PublicWrap()
}

// WrapKindKnower is implemented by backends that learn from the KMS
// whether they wrap with a public key; until then PublicWrap says true.
type WrapKindKnower interface {
	WrapKindKnown() bool
}

// WrapKindKnown reports whether [IsPublicWrap] is known for sure.
func WrapKindKnown(b Backend) bool {
	k, ok := b.(WrapKindKnower)
	return !ok || k.WrapKindKnown()
}

// CustodianKeyer is implemented by backends where one key can have
// several identities (an AWS multi-Region replica); CustodianKey names
// the key material, so two backends on one key are one custodian.
type CustodianKeyer interface {
	CustodianKey(keyIdentity string) string
}

// CustodianKey is b's [CustodianKeyer] name for keyIdentity, or itself.
func CustodianKey(b Backend, keyIdentity string) string {
	if c, ok := b.(CustodianKeyer); ok {
		return c.CustodianKey(keyIdentity)
	}
	return keyIdentity
}
