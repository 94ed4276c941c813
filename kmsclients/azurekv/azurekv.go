// Package azurekv is a Trousseau backend that wraps shares with a key in
// Azure Key Vault or Azure Key Vault Managed HSM (WrapKey / UnwrapKey).
//
// Config example (in the serve config):
//
//	backends:
//	  - name: azure-we
//	    azurekv:
//	      vaultURL: https://myvault.vault.azure.net/
//	      keyName: trousseau
//	      keyVersion: ""          # empty: follow the latest version
//	      algorithm: RSA-OAEP-256 # the default
//	      cloud: AzurePublic      # or AzureChina, AzureUSGovernment
//	      credential:
//	        managedIdentity: {clientID: ""} # "" = system-assigned
//
// The key identity of a wrapped share is the full ID of the key version
// that wrapped it (https://myvault.vault.azure.net/keys/trousseau/<version>),
// and Unwrap asks for exactly that version, so shares outlive a rotation.
// Probe reads the key: a new latest version shows as a new identity, and a
// disabled or expired key as a permission error.
//
// RSA-OAEP has no associated data, so the backend wraps a short hash of
// the associated data together with the share and checks it on unwrap: a
// wrapped share replayed under other associated data is rejected.
//
// With RSA-OAEP, anyone holding the key's public half can make a share
// the backend unwraps, so PublicWrap reports true and the envelope counts
// such a share as proof of nothing. With AES key wrap (a Managed HSM oct
// key) it reports false, and Unwrap refuses, without asking the vault, a
// stored share that names an RSA algorithm: an older RSA version of the
// key would open it. To move a key from RSA to AES, rotate the DEK before
// changing the algorithm.
//
// New does no network I/O: the plugin starts while the vault is out of
// reach, and says so through Probe rather than by exiting.
package azurekv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Backend is an Azure Key Vault key. It is safe for concurrent use.
type Backend struct {
	src        kmsclients.Source
	client     *azkeys.Client
	baseURL    string // https://host, as key IDs spell it
	keyName    string
	keyVersion string // "" follows the latest version
	alg        algorithm
}

var (
	_ kmsclients.Backend       = (*Backend)(nil)
	_ kmsclients.PublicWrapper = (*Backend)(nil)
)

// hooks let tests replace what New would otherwise take from the config
// and the network.
type hooks struct {
	cred      azcore.TokenCredential // instead of the configured credential
	transport policy.Transporter     // instead of the SDK's HTTP client
	// skipResourceCheck lets a test server on 127.0.0.1 answer the
	// bearer challenge for https://vault.azure.net.
	skipResourceCheck bool
}

// Retry bounds: a probe or a wrap should fail over to the other backends
// in well under a second or two, not after the SDK's minute of backoff.
// There is no per-try timeout: the caller's context rules.
var retryOptions = policy.RetryOptions{
	MaxRetries:    2,
	RetryDelay:    200 * time.Millisecond,
	MaxRetryDelay: 2 * time.Second, // a longer Retry-After fails at once
}

// New returns a backend for cfg. It reads the credential files named in
// cfg, and makes no request to Entra ID or to the vault.
func New(ctx context.Context, name string, cfg Config) (*Backend, error) {
	return newBackend(ctx, name, cfg, hooks{})
}

func newBackend(ctx context.Context, name string, cfg Config, h hooks) (*Backend, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	src := kmsclients.Source{Backend: "azurekv", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	opts := azcore.ClientOptions{
		Cloud:     clouds[cfg.Cloud],
		Retry:     retryOptions,
		Transport: h.transport,
		Telemetry: policy.TelemetryOptions{ApplicationID: "trousseau"},
	}
	cred := h.cred
	if cred == nil {
		var err error
		if cred, err = newCredential(cfg.Credential, opts); err != nil {
			return nil, src.Errorf("", nil, "%w", err)
		}
	}
	client, err := azkeys.NewClient(cfg.baseURL(), markedCredential{cred}, &azkeys.ClientOptions{
		ClientOptions:                        opts,
		DisableChallengeResourceVerification: h.skipResourceCheck,
	})
	if err != nil {
		return nil, src.Errorf("", nil, "%w", err)
	}
	alg, _ := algorithmNamed(cfg.Algorithm)
	return &Backend{
		src: src, client: client, baseURL: cfg.baseURL(),
		keyName: cfg.KeyName, keyVersion: cfg.KeyVersion, alg: alg,
	}, nil
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.src.Name }

// Close implements kmsclients.Backend. The SDK's HTTP client is shared
// and needs no closing.
func (b *Backend) Close() error { return nil }

// PublicWrap implements kmsclients.PublicWrapper: RSA-OAEP wraps with a
// public key. Unwrap keeps an AES-configured backend to AES shares, so
// that its false holds for every share it opens.
func (b *Backend) PublicWrap() bool { return b.alg.rsa }

// Probe reads the key (the pinned version, or the latest) and reports its
// ID, after checking that Wrap could use it.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", b.fail(ctx, kmsclients.OpProbe, err)
	}
	resp, err := b.client.GetKey(ctx, b.keyName, b.keyVersion, nil)
	if err != nil {
		return "", b.fail(ctx, kmsclients.OpProbe, err)
	}
	return b.checkKey(resp.KeyBundle)
}

// Wrap wraps the share, bound to aad, with the key's current (or pinned)
// version.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, b.fail(ctx, kmsclients.OpWrap, err)
	}
	if len(share) == 0 || len(share) > maxShareSize {
		return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, nil, "share of %d bytes; want 1 to %d", len(share), maxShareSize)
	}
	plain := seal(share, aad)
	defer clear(plain)
	resp, err := b.client.WrapKey(ctx, b.keyName, b.keyVersion, b.params(b.alg, plain), nil)
	if err != nil {
		return kmsclients.Wrapped{}, b.fail(ctx, kmsclients.OpWrap, err)
	}
	return b.wrapped(resp.KeyOperationResult)
}

// Unwrap asks the key version named by w.KeyIdentity to unwrap the share,
// then checks that it was bound to aad.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, b.fail(ctx, kmsclients.OpUnwrap, err)
	}
	version, err := b.versionOf(w.KeyIdentity)
	if err != nil {
		return nil, b.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "%v", err)
	}
	alg, ct, err := parseWrapped(w.Ciphertext)
	if err != nil {
		return nil, b.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "%v", err)
	}
	if alg.rsa && !b.alg.rsa {
		return nil, b.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "share wrapped with %s, a public-key algorithm; this backend wraps with %s", alg.name, b.alg.name)
	}
	resp, err := b.client.UnwrapKey(ctx, b.keyName, version, b.params(alg, ct), nil)
	if err != nil {
		return nil, b.fail(ctx, kmsclients.OpUnwrap, err)
	}
	defer clear(resp.Result)
	share, err := open(resp.Result, aad)
	if err != nil {
		return nil, b.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "%v", err)
	}
	return share, nil
}

func (b *Backend) params(alg algorithm, value []byte) azkeys.KeyOperationParameters {
	name := alg.name
	return azkeys.KeyOperationParameters{Algorithm: &name, Value: value}
}

// wrapped checks what WrapKey answered and frames it.
func (b *Backend) wrapped(r azkeys.KeyOperationResult) (kmsclients.Wrapped, error) {
	if r.KID == nil || len(r.Result) == 0 {
		return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, nil, "the vault answered without a key ID or result")
	}
	kid := string(*r.KID)
	version, err := b.versionOf(kid)
	if err != nil {
		return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, nil, "the vault answered with %v", err)
	}
	if b.keyVersion != "" && !strings.EqualFold(version, b.keyVersion) {
		return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, nil, "the vault wrapped with version %s, not the pinned %s", version, b.keyVersion)
	}
	if len(r.Result) > kmsclients.MaxWrappedSize-headerSize {
		return kmsclients.Wrapped{}, b.src.Errorf(kmsclients.OpWrap, nil, "the vault answered with %d bytes", len(r.Result))
	}
	ct := framing.Frame(append([]byte{b.alg.id}, r.Result...))
	return kmsclients.Wrapped{Ciphertext: ct, KeyIdentity: kid}, nil
}

// checkKey checks that the key GetKey returned is ours and usable for
// wrapping now, and returns its ID.
func (b *Backend) checkKey(k azkeys.KeyBundle) (string, error) {
	if k.Key == nil || k.Key.KID == nil {
		return "", b.src.Errorf(kmsclients.OpProbe, nil, "the vault answered without a key ID")
	}
	kid := string(*k.Key.KID)
	if _, err := b.versionOf(kid); err != nil {
		return "", b.src.Errorf(kmsclients.OpProbe, nil, "the vault answered with %v", err)
	}
	if err := b.usable(k); err != nil {
		return "", b.src.Errorf(kmsclients.OpProbe, kmsclients.ErrPermission, "key %s %v", kid, err)
	}
	return kid, nil
}

// usable reports why Key Vault would refuse to wrap with k, if it would.
func (b *Backend) usable(k azkeys.KeyBundle) error {
	if a := k.Attributes; a != nil {
		now := time.Now()
		switch {
		case a.Enabled != nil && !*a.Enabled:
			return errors.New("is disabled")
		case a.Expires != nil && !now.Before(*a.Expires):
			return fmt.Errorf("expired at %s", a.Expires.UTC().Format(time.RFC3339))
		case a.NotBefore != nil && now.Before(*a.NotBefore):
			return fmt.Errorf("is not valid before %s", a.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if kty := k.Key.Kty; kty != nil && !fits(*kty, b.alg) {
		return fmt.Errorf("has type %s, which cannot wrap with %s", *kty, b.alg.name)
	}
	if ops := k.Key.KeyOps; len(ops) > 0 && !(hasOp(ops, azkeys.KeyOperationWrapKey) && hasOp(ops, azkeys.KeyOperationUnwrapKey)) {
		return errors.New("does not permit wrapKey and unwrapKey (key_ops)")
	}
	return nil
}

// fits reports whether a key of type kty can wrap with alg: RSA-OAEP
// needs an RSA key, AES key wrap an AES (oct) key, which only Managed HSM
// offers.
func fits(kty azkeys.KeyType, alg algorithm) bool {
	if alg.rsa {
		return kty == azkeys.KeyTypeRSA || kty == azkeys.KeyTypeRSAHSM
	}
	return kty == azkeys.KeyTypeOct || kty == azkeys.KeyTypeOctHSM
}

func hasOp(ops []*azkeys.KeyOperation, want azkeys.KeyOperation) bool {
	for _, op := range ops {
		if op != nil && *op == want {
			return true
		}
	}
	return false
}

// versionOf returns the version in kid, a key ID of the form
// https://host/keys/name/version, after checking that it names a version
// of this backend's key: a share wrapped elsewhere is not sent to the vault.
func (b *Backend) versionOf(kid string) (string, error) {
	if len(kid) > kmsclients.MaxKeyIdentitySize {
		return "", fmt.Errorf("a key ID of %d bytes", len(kid))
	}
	u, err := url.Parse(kid)
	if err != nil || u.Scheme != "https" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("key ID %q, not an https URL of a key version", kid)
	}
	parts := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	if len(parts) != 3 || parts[0] != "keys" || !keyVersionRE.MatchString(parts[2]) {
		return "", fmt.Errorf("key ID %q, not of the form https://host/keys/name/version", kid)
	}
	// Key Vault compares host and key names without regard to case.
	if "https://"+strings.ToLower(u.Host) != b.baseURL || !strings.EqualFold(parts[1], b.keyName) {
		return "", fmt.Errorf("key ID %q, not a version of %s/keys/%s", kid, b.baseURL, b.keyName)
	}
	return parts[2], nil
}

// Wrapped share format: framing's version, algorithm id, then what WrapKey
// returned. The plaintext given to WrapKey is binding(aad) || share ||
// padding; see seal.
var framing = kmsclients.Framing{Version: 1}

const (
	headerSize  = 2
	bindingSize = 16
	// maxShareSize keeps the sealed share within what RSA-OAEP-256 can
	// wrap under a 2048-bit key (190 bytes). Shares are ~33 bytes.
	maxShareSize = 128
	bindingLabel = "trousseau/azurekv/aad/v1\x00"
)

func parseWrapped(ct []byte) (algorithm, []byte, error) {
	body, err := framing.Unframe(ct)
	if err != nil {
		return algorithm{}, nil, err
	}
	if len(body) < 2 {
		return algorithm{}, nil, errors.New("malformed wrapped share: no wrapped key after the algorithm")
	}
	alg, ok := algorithmByID(body[0])
	if !ok {
		return algorithm{}, nil, errors.New("malformed wrapped share (unknown algorithm)")
	}
	return alg, body[1:], nil
}

// binding is the first 16 bytes of SHA-256 over a label and aad: enough
// to tell one associated data from another, which is all it is for (the
// vault's key is what keeps the share secret and whole).
func binding(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindingLabel))
	h.Write(aad)
	return h.Sum(nil)[:bindingSize]
}

// seal returns binding(aad) || share || padding. The padding (PKCS#7 to a
// multiple of 8 bytes) is what AES key wrap (A*KW) requires of its input;
// it is added for every algorithm so that there is one format.
func seal(share, aad []byte) []byte {
	n := 8 - len(share)%8
	out := make([]byte, 0, bindingSize+len(share)+n)
	out = append(out, binding(aad)...)
	out = append(out, share...)
	return append(out, bytes.Repeat([]byte{byte(n)}, n)...)
}

// open undoes seal: it checks the binding and the padding and returns a
// copy of the share.
func open(plain, aad []byte) ([]byte, error) {
	if len(plain) < bindingSize+8 || len(plain)%8 != 0 {
		return nil, errors.New("the unwrapped share is malformed")
	}
	if subtle.ConstantTimeCompare(plain[:bindingSize], binding(aad)) != 1 {
		return nil, errors.New("the share was wrapped with other associated data")
	}
	n := int(plain[len(plain)-1])
	body := plain[bindingSize:]
	if n < 1 || n > 8 || n >= len(body) || !bytes.Equal(body[len(body)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, errors.New("the unwrapped share is malformed")
	}
	return bytes.Clone(body[:len(body)-n]), nil
}
