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
// The key identity is the full ID of the wrapping key version, which
// Unwrap asks for, so shares outlive a rotation. Since RSA-OAEP has no
// associated data, a hash of it is wrapped with the share. Identity,
// binding and public-key wrap are described in docs/backends/azurekv.md.
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

// hooks let tests replace the credential and the network.
type hooks struct {
	cred      azcore.TokenCredential // instead of the configured credential
	transport policy.Transporter     // instead of the SDK's HTTP client
	// skipResourceCheck lets a test server on 127.0.0.1 answer the
	// bearer challenge for https://vault.azure.net.
	skipResourceCheck bool
}

// Retry bounds: fail over to other backends within a second or two, not
// after the SDK's minute of backoff. The caller's context is the timeout.
var retryOptions = policy.RetryOptions{
	MaxRetries:    2,
	RetryDelay:    200 * time.Millisecond,
	MaxRetryDelay: 2 * time.Second, // a longer Retry-After fails at once
}

// New reads cfg's credential files but makes no request, so the plugin
// starts while the vault is out of reach.
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

// Name implements [kmsclients.Backend].
func (b *Backend) Name() string { return b.src.Name }

// Close implements [kmsclients.Backend]; the SDK's client needs none.
func (b *Backend) Close() error { return nil }

// PublicWrap implements [kmsclients.PublicWrapper]. Unwrap keeps an AES
// backend to AES shares, so its false holds for every share it opens.
func (b *Backend) PublicWrap() bool { return b.alg.rsa }

// Probe returns the ID of the pinned or latest key version, once Wrap
// could use it (disabled or expired: permission).
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

// Wrap wraps share, bound to aad, with the current or pinned version.
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

// Unwrap unwraps with the version w.KeyIdentity names, then checks aad.
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

// checkKey returns the ID of GetKey's key once it is ours and usable.
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

// usable says why Key Vault would refuse to wrap with k.
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

// fits: RSA-OAEP needs an RSA key, AES key wrap an oct (Managed HSM) key.
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

// versionOf returns the version in kid (https://host/keys/name/version)
// if it is this backend's key: a share wrapped elsewhere is not sent.
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

// A wrapped share is framing's version, the algorithm id, then WrapKey's
// result over seal's plaintext.
var framing = kmsclients.Framing{Version: 1}

const (
	headerSize  = 2
	bindingSize = 16
	// maxShareSize keeps the sealed share within RSA-OAEP-256's 190
	// bytes under a 2048-bit key.
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

// binding is 16 bytes of SHA-256 over a label and aad: enough to tell
// aads apart, all it is for (the vault's key keeps the share secret).
func binding(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindingLabel))
	h.Write(aad)
	return h.Sum(nil)[:bindingSize]
}

// seal returns binding(aad) || share || PKCS#7 padding to 8 bytes, which
// AES key wrap requires, added for every algorithm for one format.
func seal(share, aad []byte) []byte {
	n := 8 - len(share)%8
	out := make([]byte, 0, bindingSize+len(share)+n)
	out = append(out, binding(aad)...)
	out = append(out, share...)
	return append(out, bytes.Repeat([]byte{byte(n)}, n)...)
}

// open checks seal's binding and padding and returns a copy of the share.
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
