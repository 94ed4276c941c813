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
// Each share is encrypted with the configured encryption context plus
// Trousseau's entries, one of them the associated data, so KMS refuses to
// open a share as another. The key identity is the key ARN KMS reports,
// asked on every call, so a repointed alias rotates the DEK without a
// restart; New makes no KMS call. Unwrap uses only keys this backend owns
// (see keyRef.owns), as a share's identity is chosen by whoever can write
// etcd. docs/backends/awskms.md has the details and error kinds.
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
	// home is the configured key's account and region: from an ARN
	// keyID at New, else from the first key ARN KMS reports (see pin).
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
	// maxBackoff keeps retries inside the API server's few seconds.
	maxBackoff = time.Second
)

// New makes no KMS call; the first Probe reports whether the key is
// usable.
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

// newRetryer is the SDK's, bounded, without the client-side retry quota,
// which adds only a second, confusing failure during an outage.
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

// notNamed refuses an answer naming a key keyID does not.
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

// pin reports whether keyARN, as KMS reports it, is one this backend may
// use; with no home yet, it sets it. A share's identity is never trusted
// so.
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

// resolveHome returns home, asking DescribeKey if no answer set it yet
// (an Unwrap first); even a disabled key tells its account.
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

// framing adds a checksum: emulators such as local-kms do not
// authenticate the whole blob, and corruption must still be
// [kmsclients.ErrInvalidCiphertext].
var framing = kmsclients.Framing{Version: 1, Checksum: true}

// fail sorts err into a kind under [kmsclients.Source.Fail].
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	return b.src.Fail(ctx, op, kindOf(err), err)
}
