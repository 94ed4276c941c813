package envelope

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"
)

// The header signing key of the officers' branch. Its private half is
// protected like a DEK: a secret split k-of-n over the custodians, in a
// header of generation 0 (never adopted: every DEK is of generation 1 or
// above). The Ed25519 seed is derived from that secret, so the secret is
// never itself a signing key.
const (
	infoSigningKey    = "trousseau/v1/header-signing-key"
	signingKeyVersion = 1
)

// SigningKey is the wrapped signing key and its public half, as kept in a
// file every node reads (recovery.signingKeyFile) and in the officers'
// packet (public half only).
type SigningKey struct {
	Version int               `json:"version"`
	Public  ed25519.PublicKey `json:"publicKey"`
	Wrapped []byte            `json:"wrapped"` // a header over the custodians
	Created time.Time         `json:"created"`
}

// MakeSigningKey makes a signing key wrapped by every backend of e.
func (e *Envelope) MakeSigningKey(ctx context.Context) (*SigningKey, error) {
	secret, h, err := e.life.wrapNewSecret(ctx, 0)
	defer clear(secret)
	if err != nil {
		return nil, err
	}
	raw, err := h.seal(secret, nil)
	if err != nil {
		return nil, err
	}
	priv := signingKeyFrom(secret)
	defer clear(priv)
	return &SigningKey{Version: signingKeyVersion, Public: bytes.Clone(priv.Public().(ed25519.PublicKey)), Wrapped: raw, Created: h.Created}, nil
}

func signingKeyFrom(secret []byte) ed25519.PrivateKey {
	seed := deriveKey(secret, infoSigningKey)
	defer clear(seed)
	return ed25519.NewKeyFromSeed(seed)
}

// unlock opens the signing key with k backends and checks it against its
// stated public half.
func (k *SigningKey) unlock(ctx context.Context, o *opener) (ed25519.PrivateKey, error) {
	h, err := ParseHeader(k.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if h.Generation != 0 || h.Recovery != nil {
		return nil, fmt.Errorf("signing key: %w: not a signing key's header", ErrInvalid)
	}
	secret, _, err := o.recoverDEK(ctx, h, k.Wrapped, false)
	if err != nil {
		return nil, fmt.Errorf("unlock the header signing key: %w", err)
	}
	defer clear(secret)
	priv := signingKeyFrom(secret)
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), k.Public) {
		clear(priv)
		return nil, fmt.Errorf("signing key: %w: its wrapped key does not match its public key", ErrInvalid)
	}
	return priv, nil
}

// MarshalSigningKey encodes k for its file.
func MarshalSigningKey(k *SigningKey) ([]byte, error) {
	b, err := json.MarshalIndent(k, "", "  ")
	return append(b, '\n'), err
}

// ParseSigningKey decodes a signing key file; file names it in errors.
func ParseSigningKey(file string, b []byte) (*SigningKey, error) {
	var k SigningKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("signing key file %s: %w", file, err)
	}
	switch {
	case k.Version != signingKeyVersion:
		return nil, fmt.Errorf("signing key file %s: version %d, this build reads %d", file, k.Version, signingKeyVersion)
	case len(k.Public) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("signing key file %s: publicKey is %d bytes, want %d", file, len(k.Public), ed25519.PublicKeySize)
	}
	if _, err := ParseHeader(k.Wrapped); err != nil {
		return nil, fmt.Errorf("signing key file %s: wrapped: %w", file, err)
	}
	return &k, nil
}
