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
// Each share is encrypted under the key's primary version with the
// share's associated data (which names the DEK and the share's index),
// behind a label of this backend, as Cloud KMS's additional
// authenticated data: Cloud KMS itself refuses to open a share as
// another. Every request carries the CRC32C checksums Cloud KMS verifies
// (plaintext, associated data, ciphertext), and every answer is checked
// against the checksums and verified_* flags Cloud KMS returns; an answer
// that fails them twice is an invalid-ciphertext error, never a share.
//
// The key identity is the name of the key version that wrapped the share,
// which Encrypt returns; Probe reads the key's primary version with
// GetCryptoKey, so a new primary version in Cloud KMS is noticed and
// rotates the DEK. Decrypt is sent to the configured key, which picks the
// version from the ciphertext; a share whose recorded identity names
// another key (another project, key ring or key) is refused without a
// call, since whoever can write etcd chooses that string.
//
// New makes no remote call: not to Cloud KMS, not to a metadata server
// nor to a token endpoint. Application Default Credentials are looked
// for at the first call, so a backend that is unreachable, or not yet
// given its credentials, when the plugin starts is a backend that is
// down, which the threshold envelope copes with.
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
	// reported is the key's name as Cloud KMS spells it in its answers,
	// once one has come: the configured name, or the same key with the
	// project's number for its ID (which resource names may carry in
	// answers). Shares recorded under either are this key's.
	reported atomic.Pointer[keyName]
}

var (
	_ kmsclients.Backend        = (*Backend)(nil)
	_ kmsclients.CustodianKeyer = (*Backend)(nil)
)

// New returns a backend for cfg. It reads cfg.CredentialsFile, if set,
// and makes no remote call (see the package comment).
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

// integrityAttempts bounds the calls made for one operation whose
// answers fail their checksums: Cloud KMS asks clients to discard such an
// answer and retry a limited number of times.
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

// encryptFailed is the error of Encrypt failing with err. Cloud KMS
// answers FailedPrecondition when the primary version cannot encrypt, be
// it disabled, destroyed or still being generated, and only its message
// (which is no contract) tells them apart. So for that code the key is
// read, as Probe reads it: a primary version still PENDING_GENERATION or
// PENDING_IMPORT is unavailable, as Probe says (it becomes usable by
// itself), not permission. Any other state, or a GetCryptoKey that fails,
// leaves the error as Encrypt's code sorts it.
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

// Unwrap decrypts a share that Wrap encrypted, after checking that its
// key identity names a version of this backend's key.
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

// decrypt calls Decrypt on the configured key with the integrity fields
// set, and returns a plaintext that matches its checksum.
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

// foreignAnswer is the error of an answer in which Cloud KMS names a key
// (or a version of one) that keyName does not name: another project, key
// ring or key. It is of kind permission whatever op is. The fault is in
// the configuration or the server, not in a share: an endpoint that is
// not the Cloud KMS of the key's project, a proxy that routes elsewhere,
// a server answering for a key it was not asked about. Only an operator
// can change that, and until then every call would end the same way.
// On unwrap it is not invalid ciphertext either: the answer is
// GetCryptoKey's, about the key, whatever the share; and invalid
// ciphertext would tell the envelope that the stored share is bad (not
// worth retrying, possibly tampered with), when it is this backend that
// cannot be trusted for now.
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

// pinVersion checks that name, a key version Cloud KMS reports using or
// holding as primary, is a version of the configured key.
func (b *Backend) pinVersion(op, name string) error {
	k, _, err := parseVersionName(name)
	if err != nil || !b.pin(k) {
		return b.foreignAnswer(op, "key version", name)
	}
	return nil
}

// pin reports whether k, a key that Cloud KMS reports for the configured
// key, is it; the first such answer sets how Cloud KMS spells it.
// Cloud KMS's answer is trusted here; a share's key identity never is.
func (b *Backend) pin(k keyName) bool {
	if !b.key.sameBut(k) || (k.project != b.key.project && !numberRE.MatchString(k.project)) {
		return false
	}
	b.reported.CompareAndSwap(nil, &k)
	return k == b.key || k == *b.reported.Load()
}

// checkIdentity refuses a share whose key identity does not name a
// version of this backend's key, without a call, except once: when the
// identity names the key under a project number while Cloud KMS has not
// yet said how it spells the configured project, GetCryptoKey asks.
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

// framing stores a share as a version byte and the Cloud KMS ciphertext.
// The version names the associated data's construction (aadLabel), so
// that a later one can be told apart. Cloud KMS authenticates the whole
// ciphertext; the backend adds no checksum.
var framing = kmsclients.Framing{Version: 1}

const (
	// aadLabel separates Trousseau's shares from whatever else the key
	// encrypts: another application's ciphertext never opens as a share.
	aadLabel = "trousseau/gcpkms/v1\x00"
	// maxShareSize is far above a share (~33 bytes) and within what an
	// HSM key takes (8 KiB of plaintext and AAD together).
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

// matches reports whether sum, an integrity field of an answer, is the
// CRC32C of b. An absent field does not match: Cloud KMS always sets it.
func matches(sum *wrapperspb.Int64Value, b []byte) bool {
	return sum != nil && sum.GetValue() == checksum(b).GetValue()
}
