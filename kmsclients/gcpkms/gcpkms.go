// Package gcpkms is a Trousseau backend that wraps shares with a Google
// Cloud KMS symmetric key (Encrypt / Decrypt over gRPC).
//
// Config example (in the backends list of the serve config):
//
//	backends:
//	  - name: gcp-eu
//	    gcpkms:
//	      keyName: projects/my-project/locations/europe-west1/keyRings/trousseau/cryptoKeys/share
//	      # endpoint: cloudkms.europe-west1.rep.googleapis.com:443
//	      # credentialsFile: /etc/trousseau/gcp-wif.json   # default: Application Default Credentials
//	      # impersonateServiceAccount: trousseau@my-project.iam.gserviceaccount.com
//	      # timeout: 5s
//
// Each share is encrypted under the key's primary version with its
// associated data, behind a label, as Cloud KMS's additional
// authenticated data, so Cloud KMS refuses to open a share as another.
// Requests and answers carry CRC32C integrity fields; an answer failing
// them twice is [kmsclients.ErrInvalidCiphertext], never a share. The key
// identity is the key version that wrapped the share; Probe reports the
// primary version, so a new one rotates the DEK. New makes no remote
// call. docs/backends/gcpkms.md has the details and error kinds.
package gcpkms

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// kmsAPI is the part of the Cloud KMS client the backend uses.
type kmsAPI interface {
	Encrypt(ctx context.Context, req *kmspb.EncryptRequest, opts ...gax.CallOption) (*kmspb.EncryptResponse, error)
	Decrypt(ctx context.Context, req *kmspb.DecryptRequest, opts ...gax.CallOption) (*kmspb.DecryptResponse, error)
	GetCryptoKey(ctx context.Context, req *kmspb.GetCryptoKeyRequest, opts ...gax.CallOption) (*kmspb.CryptoKey, error)
	Close() error
}

var _ kmsAPI = (*kms.KeyManagementClient)(nil)

// Backend is a Cloud KMS key. It is safe for concurrent use.
type Backend struct {
	src     kmsclients.Source
	key     keyName
	client  kmsAPI
	timeout time.Duration
	// reported is the key's name as Cloud KMS spells it in answers (the
	// project as ID or number), once one has come.
	reported atomic.Pointer[keyName]
}

var (
	_ kmsclients.Backend        = (*Backend)(nil)
	_ kmsclients.CustodianKeyer = (*Backend)(nil)
)

// New reads cfg.CredentialsFile, if set, and makes no remote call.
func New(ctx context.Context, name string, cfg Config) (*Backend, error) {
	return newBackend(ctx, name, cfg)
}

// newBackend lets tests add client options (a TLS root of their own).
func newBackend(ctx context.Context, name string, cfg Config, extra ...option.ClientOption) (*Backend, error) {
	src := kmsclients.Source{Backend: "gcpkms", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	opts, err := clientOptions(cfg)
	if err != nil {
		return nil, src.Errorf("", nil, "%w", err)
	}
	client, err := kms.NewKeyManagementClient(ctx, append(opts, extra...)...)
	if err != nil {
		return nil, src.Errorf("", nil, "Cloud KMS client: %w", err)
	}
	// The generated defaults retry until a 60 s timeout of their own;
	// the backend's retries and the caller's deadline replace them.
	client.CallOptions.Encrypt = nil
	client.CallOptions.Decrypt = nil
	client.CallOptions.GetCryptoKey = nil
	key, _ := parseKeyName(cfg.KeyName) // valid: CheckNew said so
	return &Backend{src: src, key: key, client: client, timeout: cfg.Timeout.Duration}, nil
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.src.Name }

// Close implements kmsclients.Backend: it closes the gRPC connection.
func (b *Backend) Close() error { return b.client.Close() }

// CustodianKey implements kmsclients.CustodianKeyer: every version of a
// key, reached through any endpoint, is one custodian.
func (b *Backend) CustodianKey(keyIdentity string) string {
	k, _, err := parseVersionName(keyIdentity)
	if err != nil {
		return keyIdentity
	}
	return "gcpkms:" + k.String()
}

// integrityAttempts: Cloud KMS asks clients to discard an answer that
// fails its checksums and retry a limited number of times.
const integrityAttempts = 2

// Wrap encrypts share under the key's primary version, bound to aad.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	const op = kmsclients.OpWrap
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, b.src.Fail(ctx, op, nil, err)
	}
	if len(share) == 0 || len(share) > maxShareSize {
		return kmsclients.Wrapped{}, b.src.Errorf(op, nil, "share of %d bytes; want 1 to %d", len(share), maxShareSize)
	}
	callCtx, cancel := b.bound(ctx)
	defer cancel()
	resp, err := b.encrypt(callCtx, ctx, share, boundAAD(aad))
	if err != nil {
		return kmsclients.Wrapped{}, err
	}
	if err := b.pinVersion(op, resp.GetName()); err != nil {
		return kmsclients.Wrapped{}, err
	}
	if n := 1 + len(resp.GetCiphertext()); n > kmsclients.MaxWrappedSize {
		return kmsclients.Wrapped{}, b.src.Errorf(op, nil, "Cloud KMS returned a wrapped share of %d bytes (limit %d)", n, kmsclients.MaxWrappedSize)
	}
	return kmsclients.Wrapped{Ciphertext: framing.Frame(resp.GetCiphertext()), KeyIdentity: resp.GetName()}, nil
}

// encrypt calls Encrypt with the integrity fields set, and returns an
// answer whose own fields hold.
func (b *Backend) encrypt(callCtx, ctx context.Context, share, aad []byte) (*kmspb.EncryptResponse, error) {
	req := &kmspb.EncryptRequest{
		Name:                              b.key.String(),
		Plaintext:                         share,
		PlaintextCrc32C:                   checksum(share),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: checksum(aad),
	}
	var integrity error
	for range integrityAttempts {
		resp, err := b.client.Encrypt(callCtx, req, callOptions(callCtx)...)
		if err != nil {
			return nil, b.encryptFailed(callCtx, ctx, err)
		}
		if integrity = checkEncrypted(resp); integrity == nil {
			return resp, nil
		}
	}
	return nil, b.src.Errorf(kmsclients.OpWrap, kmsclients.ErrInvalidCiphertext, "%w", integrity)
}

// encryptFailed sorts Encrypt's err. FailedPrecondition covers disabled,
// destroyed and still-pending primaries alike, so the key is read: a
// pending one is unavailable (it becomes usable by itself), as in Probe.
func (b *Backend) encryptFailed(callCtx, ctx context.Context, err error) error {
	const op = kmsclients.OpWrap
	if status.Code(err) != codes.FailedPrecondition || callCtx.Err() != nil {
		return b.fail(ctx, op, err)
	}
	key, kerr := b.getKey(callCtx, ctx, op)
	if kerr != nil {
		return b.fail(ctx, op, err)
	}
	primary := key.GetPrimary()
	if !errors.Is(stateKind(primary.GetState()), kmsclients.ErrUnavailable) {
		return b.fail(ctx, op, err)
	}
	return b.failAs(ctx, op, kmsclients.ErrUnavailable, fmt.Sprintf("primary version %s is %s, not usable yet: ", primary.GetName(), primary.GetState()), err)
}

// Unwrap decrypts a share after checking that its key identity names a
// version of this backend's key.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	const op = kmsclients.OpUnwrap
	if err := ctx.Err(); err != nil {
		return nil, b.src.Fail(ctx, op, nil, err)
	}
	ct, err := framing.Unframe(w.Ciphertext)
	if err != nil {
		return nil, b.src.Errorf(op, kmsclients.ErrInvalidCiphertext, "%w", err)
	}
	callCtx, cancel := b.bound(ctx)
	defer cancel()
	if err := b.checkIdentity(callCtx, ctx, w.KeyIdentity); err != nil {
		return nil, err
	}
	return b.decrypt(callCtx, ctx, ct, boundAAD(aad))
}

// decrypt returns a plaintext that matches its checksum.
func (b *Backend) decrypt(callCtx, ctx context.Context, ct, aad []byte) ([]byte, error) {
	req := &kmspb.DecryptRequest{
		Name:                              b.key.String(),
		Ciphertext:                        ct,
		CiphertextCrc32C:                  checksum(ct),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: checksum(aad),
	}
	var integrity error
	for range integrityAttempts {
		resp, err := b.client.Decrypt(callCtx, req, callOptions(callCtx)...)
		if err != nil {
			return nil, b.fail(ctx, kmsclients.OpUnwrap, err)
		}
		if integrity = checkDecrypted(resp); integrity == nil {
			return resp.GetPlaintext(), nil
		}
		clear(resp.GetPlaintext())
	}
	return nil, b.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "%w", integrity)
}

// Probe reads the key and reports its primary version, after checking
// that Encrypt could use it.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	const op = kmsclients.OpProbe
	if err := ctx.Err(); err != nil {
		return "", b.src.Fail(ctx, op, nil, err)
	}
	callCtx, cancel := b.bound(ctx)
	defer cancel()
	key, err := b.getKey(callCtx, ctx, op)
	if err != nil {
		return "", err
	}
	if p := key.GetPurpose(); p != kmspb.CryptoKey_ENCRYPT_DECRYPT {
		return "", b.src.Errorf(op, kmsclients.ErrPermission, "key %s has purpose %s, which cannot wrap shares: want ENCRYPT_DECRYPT", key.GetName(), p)
	}
	primary := key.GetPrimary()
	if primary == nil {
		return "", b.src.Errorf(op, kmsclients.ErrPermission, "key %s has no primary version", key.GetName())
	}
	if err := b.pinVersion(op, primary.GetName()); err != nil {
		return "", err
	}
	if kind := stateKind(primary.GetState()); kind != nil {
		return "", b.src.Errorf(op, kind, "primary version %s is %s", primary.GetName(), primary.GetState())
	}
	return primary.GetName(), nil
}

// getKey asks GetCryptoKey about the configured key and pins the name
// Cloud KMS gives it.
func (b *Backend) getKey(callCtx, ctx context.Context, op string) (*kmspb.CryptoKey, error) {
	key, err := b.client.GetCryptoKey(callCtx, &kmspb.GetCryptoKeyRequest{Name: b.key.String()}, callOptions(callCtx)...)
	if err != nil {
		return nil, b.fail(ctx, op, err)
	}
	k, err := parseKeyName(key.GetName())
	if err != nil || !b.pin(k) {
		return nil, b.foreignAnswer(op, "key", key.GetName())
	}
	return key, nil
}

// foreignAnswer is the error of an answer naming another key than
// keyName. It is permission for every op, unwrap too: the fault is the
// endpoint or configuration, not the share, and invalid ciphertext would
// call a sound share tampered with.
func (b *Backend) foreignAnswer(op, what, name string) error {
	return b.src.Errorf(op, kmsclients.ErrPermission, "Cloud KMS answered with %s %q, which keyName %s does not name: check that gcpkms.endpoint reaches the Cloud KMS of that key, and gcpkms.keyName",
		what, name, b.key)
}

// stateKind sorts a primary version's state: only an enabled version
// encrypts.
func stateKind(s kmspb.CryptoKeyVersion_CryptoKeyVersionState) error {
	switch s {
	case kmspb.CryptoKeyVersion_ENABLED:
		return nil
	case kmspb.CryptoKeyVersion_PENDING_GENERATION, kmspb.CryptoKeyVersion_PENDING_IMPORT:
		return kmsclients.ErrUnavailable // it will be usable soon
	default: // disabled, destroyed or scheduled for it, failed import, states to come
		return kmsclients.ErrPermission
	}
}

// pinVersion checks that a version Cloud KMS reports is the configured
// key's.
func (b *Backend) pinVersion(op, name string) error {
	k, _, err := parseVersionName(name)
	if err != nil || !b.pin(k) {
		return b.foreignAnswer(op, "key version", name)
	}
	return nil
}

// pin reports whether k, as Cloud KMS reports it, is the configured key;
// the first answer sets the spelling. A share's identity is never
// trusted so.
func (b *Backend) pin(k keyName) bool {
	if !b.key.sameBut(k) || (k.project != b.key.project && !numberRE.MatchString(k.project)) {
		return false
	}
	b.reported.CompareAndSwap(nil, &k)
	return k == b.key || k == *b.reported.Load()
}

// checkIdentity refuses, without a call, an identity that is not a
// version of this key; a project number not yet heard from Cloud KMS
// costs one GetCryptoKey.
func (b *Backend) checkIdentity(callCtx, ctx context.Context, identity string) error {
	const op = kmsclients.OpUnwrap
	k, _, err := parseVersionName(identity)
	if err != nil {
		return b.src.Errorf(op, kmsclients.ErrInvalidCiphertext, "share's key identity: %w", err)
	}
	if b.owns(k) {
		return nil
	}
	if b.reported.Load() == nil && b.key.sameBut(k) && numberRE.MatchString(k.project) && !numberRE.MatchString(b.key.project) {
		if _, err := b.getKey(callCtx, ctx, op); err != nil {
			return err
		}
		if b.owns(k) {
			return nil
		}
	}
	return b.src.Errorf(op, kmsclients.ErrInvalidCiphertext, "share was wrapped by key version %q, which is not a version of keyName %s", identity, b.key)
}

// owns reports whether k is the configured key, as configured or as
// Cloud KMS reported it.
func (b *Backend) owns(k keyName) bool {
	if k == b.key {
		return true
	}
	r := b.reported.Load()
	return r != nil && k == *r
}

// bound applies the configured timeout to ctx.
func (b *Backend) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.timeout > 0 {
		return context.WithTimeout(ctx, b.timeout)
	}
	return context.WithCancel(ctx)
}

// framing: a version byte (naming the aadLabel construction) and the
// ciphertext, which Cloud KMS authenticates, so no checksum.
var framing = kmsclients.Framing{Version: 1}

const (
	// aadLabel separates Trousseau's shares from whatever else the key
	// encrypts: another application's ciphertext never opens as a share.
	aadLabel = "trousseau/gcpkms/v1\x00"
	// maxShareSize is far above a share and within an HSM key's 8 KiB.
	maxShareSize = 1024
)

func boundAAD(aad []byte) []byte {
	return append([]byte(aadLabel), aad...)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum is the CRC32C that Cloud KMS's integrity fields carry.
func checksum(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, castagnoli)))
}

// matches reports whether sum is b's CRC32C; absent never matches, as
// Cloud KMS always sets it.
func matches(sum *wrapperspb.Int64Value, b []byte) bool {
	return sum != nil && sum.GetValue() == checksum(b).GetValue()
}
