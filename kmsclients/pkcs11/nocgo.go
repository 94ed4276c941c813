//go:build !cgo

package pkcs11

import (
	"context"
	"errors"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// errNoCgo is New's error in a build without cgo.
var errNoCgo = errors.New("this trousseau was built without cgo; the pkcs11 backend needs a cgo build (CGO_ENABLED=1)")

// Backend is never made in a build without cgo: New refuses.
type Backend struct{ src kmsclients.Source }

var _ kmsclients.Backend = (*Backend)(nil)

// New checks name and cfg, as a cgo build does, then refuses.
func New(_ context.Context, name string, cfg Config) (*Backend, error) {
	src := kmsclients.Source{Backend: "pkcs11", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	return nil, src.Errorf("", nil, "%w", errNoCgo)
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.src.Name }

// Wrap implements kmsclients.Backend.
func (b *Backend) Wrap(context.Context, []byte, []byte) (kmsclients.Wrapped, error) {
	return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, kmsclients.ErrPermission, "%w", errNoCgo)
}

// Unwrap implements kmsclients.Backend.
func (b *Backend) Unwrap(context.Context, kmsclients.Wrapped, []byte) ([]byte, error) {
	return nil, b.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrPermission, "%w", errNoCgo)
}

// Probe implements kmsclients.Backend.
func (b *Backend) Probe(context.Context) (string, error) {
	return "", b.src.Errorf(kmsclients.OpProbe, kmsclients.ErrPermission, "%w", errNoCgo)
}

// Close implements kmsclients.Backend.
func (b *Backend) Close() error { return nil }
