// Package awskms is a Trousseau backend that wraps shares with an AWS KMS
// symmetric key.
//
// Config example (in the backends list of the serve config):
//
//   - name: aws-us
//     awskms: {keyID: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", encryptionContext: {cluster: prod}}
//
// Credentials come from the SDK's default chain (IRSA or EKS Pod Identity,
// environment, shared files, instance role), which also refreshes them.
//
// Each share is sealed by Encrypt under the configured key with the
// configured encryption context plus two entries of Trousseau's own:
// "trousseau": "share" and "trousseau-aad": base64 of the associated data,
// which names the DEK and the share index, so KMS itself refuses to open a
// share as another. Decrypt is pinned to the key ARN the share was wrapped
// under, after checking that this backend owns that key: the configured
// key itself, or, for an alias, any key of the alias's account and region.
//
// The key identity is the key ARN that KMS reports: Encrypt names the key
// it used, Probe asks DescribeKey. Both are asked on every call rather than
// resolved once at New, so a repointed alias is noticed (as a key rotation)
// without a restart, and New needs no answer from KMS: a backend may be
// down when the plugin starts, and the threshold envelope copes with that.
//
// An alias name or a bare key ID names no account: KMS resolves it in the
// caller's. The backend takes the account from the first key ARN KMS
// reports for it (a Probe, a Wrap, or one DescribeKey before an Unwrap
// that comes first) and keeps it: a share recorded under a key of another
// account is refused without a Decrypt, since whoever can write etcd could
// otherwise name a key of their own that the role is allowed to use.
//
// A multi-Region key (mrk-...) and its replicas in other regions are one
// key material: CustodianKey names them alike, without the region.
package awskms

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// kmsAPI is the part of the KMS client the backend uses.
type kmsAPI interface {
	Encrypt(ctx context.Context, in *kms.EncryptInput, optFns ...func(*kms.Options)) (*kms.EncryptOutput, error)
	Decrypt(ctx context.Context, in *kms.DecryptInput, optFns ...func(*kms.Options)) (*kms.DecryptOutput, error)
	DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, optFns ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

var _ kmsAPI = (*kms.Client)(nil)

// Backend is an AWS KMS backend.
type Backend struct {
	src     kmsclients.Source
	key     keyRef
	region  string
	context map[string]string
	client  kmsAPI
	// home is where the configured key lives; every key the backend uses
	// or unwraps with lives there too (see keyRef.owns). An ARN keyID
	// gives it at New; an alias name or bare key ID leaves the account to
	// KMS, so the first key ARN KMS reports for it sets it (see pin).
	home atomic.Pointer[keyHome]
}

var (
	_ kmsclients.Backend        = (*Backend)(nil)
	_ kmsclients.CustodianKeyer = (*Backend)(nil)
)

const (
	// maxAttempts bounds the SDK's retries; the caller's deadline bounds
	// their total time.
	maxAttempts = 3
	// maxBackoff keeps retries inside the few seconds the API server
	// gives a KMS call; longer waits would only end as deadline errors.
	maxBackoff = time.Second
)

// New returns a backend for cfg. It makes no KMS call (see the package
// comment); the first Probe reports whether the key is usable.
func New(ctx context.Context, name string, cfg Config) (*Backend, error) {
	return newBackend(ctx, name, cfg)
}

// newBackend lets tests add load options (static credentials).
func newBackend(ctx context.Context, name string, cfg Config, extra ...func(*config.LoadOptions) error) (*Backend, error) {
	src := kmsclients.Source{Backend: "awskms", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	awsCfg, err := loadAWSConfig(ctx, name, cfg, extra)
	if err != nil {
		return nil, src.Errorf("", nil, "%w", err)
	}
	client := kms.NewFromConfig(awsCfg, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return withClient(name, cfg, awsCfg.Region, client)
}

func loadAWSConfig(ctx context.Context, name string, cfg Config, extra []func(*config.LoadOptions) error) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{config.WithRetryer(newRetryer)}
	if r := cfg.region(); r != "" {
		opts = append(opts, config.WithRegion(r))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.UseFIPSEndpoint {
		opts = append(opts, config.WithUseFIPSEndpoint(aws.FIPSEndpointStateEnabled))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, append(opts, extra...)...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return aws.Config{}, errors.New("no region: set awskms.region, give keyID as an ARN, or configure one for the SDK (AWS_REGION)")
	}
	if cfg.AssumeRoleARN != "" {
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(awsCfg), cfg.AssumeRoleARN,
			func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = sessionName(name) })
		awsCfg.Credentials = aws.NewCredentialsCache(provider)
	}
	return awsCfg, nil
}

// sessionName names the assumed-role session in CloudTrail (at most 64
// characters).
func sessionName(backend string) string {
	s := "trousseau-" + backend
	return s[:min(len(s), 64)]
}

// newRetryer is the SDK's standard retryer with a bounded attempt count
// and no client-side retry quota: with three attempts the quota adds
// nothing but a second, confusing failure during an outage.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = maxBackoff
		o.RateLimiter = ratelimit.None
	})
}

// withClient assembles a backend around client; cfg must be valid.
func withClient(name string, cfg Config, region string, client kmsAPI) (*Backend, error) {
	src := kmsclients.Source{Backend: "awskms", Name: name}
	key, err := parseKeyRef(cfg.KeyID)
	if err != nil {
		return nil, src.Errorf("", nil, "awskms.keyID: %w", err)
	}
	b := &Backend{src: src, key: key, region: region, context: maps.Clone(cfg.EncryptionContext), client: client}
	if h, ok := key.home(); ok {
		b.home.Store(&h)
	}
	return b, nil
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.src.Name }

// Close implements kmsclients.Backend. The SDK client holds nothing that
// needs releasing.
func (b *Backend) Close() error { return nil }

// Wrap encrypts share under the configured key, bound to aad.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	const op = kmsclients.OpWrap
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, b.src.Fail(ctx, op, nil, err)
	}
	out, err := b.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId:             aws.String(b.key.raw),
		Plaintext:         share,
		EncryptionContext: b.encryptionContext(aad),
	})
	if err != nil {
		return kmsclients.Wrapped{}, b.fail(ctx, op, err)
	}
	keyARN := aws.ToString(out.KeyId)
	if !b.pin(keyARN) {
		return kmsclients.Wrapped{}, b.notNamed(op, keyARN)
	}
	if len(out.CiphertextBlob) == 0 {
		return kmsclients.Wrapped{}, b.src.Errorf(op, nil, "KMS returned an empty ciphertext")
	}
	return kmsclients.Wrapped{Ciphertext: framing.Frame(out.CiphertextBlob), KeyIdentity: keyARN}, nil
}

// Unwrap decrypts a share that Wrap encrypted, with Decrypt pinned to the
// key that wrapped it.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	const op = kmsclients.OpUnwrap
	if err := ctx.Err(); err != nil {
		return nil, b.src.Fail(ctx, op, nil, err)
	}
	invalid := kmsclients.ErrInvalidCiphertext
	blob, err := framing.Unframe(w.Ciphertext)
	if err != nil {
		return nil, b.src.Errorf(op, invalid, "%w", err)
	}
	home, err := b.resolveHome(ctx)
	if err != nil {
		return nil, err
	}
	if !b.key.owns(w.KeyIdentity, home) {
		return nil, b.src.Errorf(op, invalid, "share was wrapped by key %q, which keyID %q does not name", w.KeyIdentity, b.key.raw)
	}
	out, err := b.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId:             aws.String(w.KeyIdentity),
		CiphertextBlob:    blob,
		EncryptionContext: b.encryptionContext(aad),
	})
	if err != nil {
		return nil, b.fail(ctx, op, err)
	}
	if got := aws.ToString(out.KeyId); got != w.KeyIdentity {
		clear(out.Plaintext)
		return nil, b.src.Errorf(op, invalid, "Decrypt pinned to %q reports key %q", w.KeyIdentity, got)
	}
	return out.Plaintext, nil
}

// Probe asks DescribeKey which key keyID names now and whether it can
// wrap shares.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	const op = kmsclients.OpProbe
	if err := ctx.Err(); err != nil {
		return "", b.src.Fail(ctx, op, nil, err)
	}
	md, err := b.describe(ctx, op)
	if err != nil {
		return "", err
	}
	keyARN := aws.ToString(md.Arn)
	if err := checkUsable(md); err != nil {
		return "", b.src.Errorf(op, nil, "key %s %w", keyARN, err)
	}
	if !b.pin(keyARN) {
		return "", b.notNamed(op, keyARN)
	}
	return keyARN, nil
}

// notNamed is the error of an answer of KMS that names a key keyID does
// not: the backend does not use it.
func (b *Backend) notNamed(op, keyARN string) error {
	return b.src.Errorf(op, nil, "KMS reports key %q, which keyID %q does not name", keyARN, b.key.raw)
}

// CustodianKey implements kmsclients.CustodianKeyer: a multi-Region key
// and its replicas are one custodian.
func (b *Backend) CustodianKey(keyIdentity string) string { return custodianKey(keyIdentity) }

// describe asks DescribeKey about the key keyID names now.
func (b *Backend) describe(ctx context.Context, op string) (*types.KeyMetadata, error) {
	out, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(b.key.raw)})
	if err != nil {
		return nil, b.fail(ctx, op, err)
	}
	if out.KeyMetadata == nil {
		return nil, b.src.Errorf(op, nil, "DescribeKey returned no key metadata")
	}
	return out.KeyMetadata, nil
}

// pin reports whether keyARN, a key that KMS reports keyID names, is one
// this backend may use. When keyID gave no home, the first such key sets
// it: later answers, and shares, that name a key of another account are
// refused. KMS's answer is trusted here; a share's key identity, which
// anyone who can write etcd can choose, never is.
func (b *Backend) pin(keyARN string) bool {
	if h := b.home.Load(); h != nil {
		return b.key.owns(keyARN, *h)
	}
	a, err := arn.Parse(keyARN)
	if err != nil {
		return false
	}
	h := keyHome{partition: a.Partition, region: b.region, account: a.AccountID}
	if !b.key.owns(keyARN, h) {
		return false
	}
	b.home.CompareAndSwap(nil, &h)
	return b.key.owns(keyARN, *b.home.Load())
}

// resolveHome returns the configured key's home, asking DescribeKey while
// no answer of KMS has set it: only when an Unwrap comes before any
// successful Probe or Wrap. The key's state does not matter here: a
// disabled key still says which account it is in.
func (b *Backend) resolveHome(ctx context.Context) (keyHome, error) {
	if h := b.home.Load(); h != nil {
		return *h, nil
	}
	md, err := b.describe(ctx, kmsclients.OpUnwrap)
	if err != nil {
		return keyHome{}, err
	}
	if keyARN := aws.ToString(md.Arn); !b.pin(keyARN) {
		return keyHome{}, b.notNamed(kmsclients.OpUnwrap, keyARN)
	}
	return *b.home.Load(), nil
}

// checkUsable sorts a key that exists but cannot wrap shares now.
func checkUsable(md *types.KeyMetadata) error {
	switch md.KeyState {
	case types.KeyStateEnabled:
	case types.KeyStateUnavailable, types.KeyStateCreating, types.KeyStateUpdating:
		return fmt.Errorf("is %s: %w", md.KeyState, kmsclients.ErrUnavailable)
	default: // Disabled, PendingDeletion, PendingImport, and states to come.
		return fmt.Errorf("is %s: %w", md.KeyState, kmsclients.ErrPermission)
	}
	// An emulator may leave the spec out; AWS always sets it.
	if md.KeyUsage != types.KeyUsageTypeEncryptDecrypt || (md.KeySpec != "" && md.KeySpec != types.KeySpecSymmetricDefault) {
		return fmt.Errorf("cannot wrap shares (usage %s, spec %s; want ENCRYPT_DECRYPT, SYMMETRIC_DEFAULT): %w", md.KeyUsage, md.KeySpec, kmsclients.ErrPermission)
	}
	return nil
}

// encryptionContext is the configured context plus Trousseau's entries.
// The associated data is base64 because context values are strings.
func (b *Backend) encryptionContext(aad []byte) map[string]string {
	ec := make(map[string]string, len(b.context)+2)
	maps.Copy(ec, b.context)
	ec[ctxKeyTrousseau] = ctxValueShare
	ec[ctxKeyAAD] = base64.StdEncoding.EncodeToString(aad)
	return ec
}

// framing stores a share as a version byte, the KMS ciphertext blob and
// a checksum: corruption of any byte reports ErrInvalidCiphertext even
// from emulators that, unlike AWS, do not authenticate the whole blob
// (local-kms ignores the key ARN it prefixes to its blobs when Decrypt
// names the key).
var framing = kmsclients.Framing{Version: 1, Checksum: true}

// fail is the error of a call to KMS that failed with err, sorted into
// a kind (the context rule is kmsclients.Source.Fail's).
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	return b.src.Fail(ctx, op, kindOf(err), err)
}
