// Package kmsplugin is a Trousseau backend whose custodian is any
// Kubernetes KMS plugin (v2 or v1beta1) on a unix socket: a vendor's,
// such as aws-encryption-provider, or another Trousseau.
//
// Config example (in the backends list of the serve config):
//
//   - name: aws
//     kmsplugin: {endpoint: unix:///var/run/kmsplugin/aws/socket.sock, timeout: 3s}
//   - name: legacy-hsm
//     kmsplugin: {endpoint: unix:///var/run/kmsplugin/hsm/socket.sock, apiVersion: v1}
//
// Wrap is the custodian's Encrypt and Unwrap its Decrypt; the KMS API has
// no associated data, so the plaintext sent is binding || share, binding
// hashing the associated data (a share moved to another DEK or index is
// [kmsclients.ErrInvalidCiphertext]). A custodian that only encodes is
// refused (see [Backend.vet]). The key identity is
// "kmsplugin:<endpoint>:<key_id>"; a new key_id is reported only once
// seen twice in a row, so a flip-flopping custodian does not rotate the
// DEK twice. New makes no call. docs/backends/kmsplugin.md has the
// framing, the rotation rule and the checks on endpoints.
package kmsplugin

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	kmsv1 "k8s.io/kms/apis/v1beta1"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/internal/safedir"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Backend is a KMS plugin custodian.
type Backend struct {
	src      kmsclients.Source
	endpoint string // unix:///path, cleaned
	path     string
	api      byte
	timeout  time.Duration
	conn     *grpc.ClientConn
	v2       kmsv2.KeyManagementServiceClient
	v1       kmsv1.KeyManagementServiceClient
	public   bool
	keys     keyTracker
	lastDial atomic.Value // dialResult
	vetted   atomic.Bool  // the custodian passed vet
}

var (
	_ kmsclients.Backend        = (*Backend)(nil)
	_ kmsclients.CustodianKeyer = (*Backend)(nil)
	_ kmsclients.PublicWrapper  = (*Backend)(nil)
)

const (
	// maxResponse is the KMS v2 limits plus framing (gRPC's default: 4 MiB).
	maxResponse = 64 << 10
	// maxReconnectDelay is short: a local connect costs nothing, and a
	// long backoff keeps a custodian that came back out of use.
	maxReconnectDelay = time.Second
	v1Version         = "v1beta1"
	// maxReason bounds the custodian's text kept in an error.
	maxReason = 256
)

// New validates name and cfg and makes no call: the connection is made
// at the first Probe, Wrap or Unwrap.
func New(_ context.Context, name string, cfg Config) (*Backend, error) {
	src := kmsclients.Source{Backend: "kmsplugin", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	path, _ := socketPath(cfg.Endpoint)
	api, _ := cfg.api()
	b := &Backend{src: src, endpoint: "unix://" + path, path: path, api: api, timeout: cfg.Timeout.Duration, public: cfg.PublicKey}
	conn, err := grpc.NewClient("passthrough:///localhost",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(b.dial),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxReconnectDelay},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponse)),
	)
	if err != nil {
		return nil, src.Errorf("", nil, "gRPC client: %w", err)
	}
	b.conn = conn
	b.v2 = kmsv2.NewKeyManagementServiceClient(conn)
	b.v1 = kmsv1.NewKeyManagementServiceClient(conn)
	return b, nil
}

// dial connects to the socket and remembers how that went, so that a
// refused permission can be told from a custodian that is down. The
// socket's directory is checked at every dial (symlinks resolved):
// whoever could write it could put a fake custodian there and be handed
// shares. The owner is not judged, as the custodian may run as another
// user (see internal/safedir).
func (b *Backend) dial(ctx context.Context, _ string) (net.Conn, error) {
	if err := safedir.CheckFile("kmsplugin.endpoint: custodian socket", b.path, false); err != nil {
		b.lastDial.Store(dialResult{&unsafeDirError{err}})
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", b.path)
	b.lastDial.Store(dialResult{err})
	return c, err
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.src.Name }

// Close implements kmsclients.Backend.
func (b *Backend) Close() error { return b.conn.Close() }

// CustodianKey implements [kmsclients.CustodianKeyer]: custodians that
// report one key_id are one, whatever their endpoints.
func (b *Backend) CustodianKey(keyIdentity string) string { return custodianKey(keyIdentity) }

// PublicWrap implements [kmsclients.PublicWrapper], as configured.
func (b *Backend) PublicWrap() bool { return b.public }

// Wrap has the custodian encrypt the share, bound to aad, once [Backend.vet]
// has found that it encrypts.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	const op = kmsclients.OpWrap
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, b.src.Fail(ctx, op, nil, err)
	}
	if err := b.vet(ctx); err != nil {
		return kmsclients.Wrapped{}, err
	}
	pt := bind(share, aad)
	defer clear(pt)
	s, err := b.encrypt(ctx, pt)
	if err != nil {
		return kmsclients.Wrapped{}, err
	}
	secret := share
	if len(secret) < minNeedle { // too short to look for alone
		secret = pt
	}
	raw, err := b.frame(s, secret, "a share")
	if err != nil {
		return kmsclients.Wrapped{}, err
	}
	if s.api == apiV2 {
		if reported := b.keys.observe(s.keyID); reported != s.keyID {
			return kmsclients.Wrapped{}, b.src.Errorf(op, kmsclients.ErrUnavailable, "the custodian encrypted under key_id %s but reports %s: its key is changing, and a share is made only under the key_id Probe reports (retry once the new one has been seen twice in a row)",
				quote(s.keyID), quote(reported))
		}
	}
	return kmsclients.Wrapped{Ciphertext: raw, KeyIdentity: identity(b.endpoint, s.keyID)}, nil
}

func (b *Backend) encrypt(ctx context.Context, pt []byte) (sealed, error) {
	callCtx, cancel := b.callContext(ctx)
	defer cancel()
	if b.api == apiV1 {
		resp, err := b.v1.Encrypt(callCtx, &kmsv1.EncryptRequest{Version: v1Version, Plain: pt})
		if err != nil {
			return sealed{}, b.fail(ctx, kmsclients.OpWrap, b.api, err)
		}
		return sealed{api: apiV1, ciphertext: resp.GetCipher()}, nil
	}
	resp, err := b.v2.Encrypt(callCtx, &kmsv2.EncryptRequest{Plaintext: pt, Uid: b.uid()})
	if err != nil {
		return sealed{}, b.fail(ctx, kmsclients.OpWrap, b.api, err)
	}
	return sealed{api: apiV2, keyID: resp.GetKeyId(), ciphertext: resp.GetCiphertext(), annotations: resp.GetAnnotations()}, nil
}

// Unwrap has the custodian decrypt a share with the API, key_id and
// annotations it was wrapped with, and checks its binding to aad.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	const op = kmsclients.OpUnwrap
	if err := ctx.Err(); err != nil {
		return nil, b.src.Fail(ctx, op, nil, err)
	}
	invalid := kmsclients.ErrInvalidCiphertext
	s, err := unmarshal(w.Ciphertext)
	if err != nil {
		return nil, b.src.Errorf(op, invalid, "%w", err)
	}
	pt, err := b.decrypt(ctx, s)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	share, ok := unbind(pt, aad)
	if !ok {
		return nil, b.src.Errorf(op, invalid, "the custodian returned a plaintext that is not this share (its binding to the DEK and share index does not match)")
	}
	return share, nil
}

func (b *Backend) decrypt(ctx context.Context, s sealed) ([]byte, error) {
	callCtx, cancel := b.callContext(ctx)
	defer cancel()
	if s.api == apiV1 {
		resp, err := b.v1.Decrypt(callCtx, &kmsv1.DecryptRequest{Version: v1Version, Cipher: s.ciphertext})
		if err != nil {
			return nil, b.fail(ctx, kmsclients.OpUnwrap, s.api, err)
		}
		return resp.GetPlain(), nil
	}
	resp, err := b.v2.Decrypt(callCtx, &kmsv2.DecryptRequest{Ciphertext: s.ciphertext, Uid: b.uid(), KeyId: s.keyID, Annotations: s.annotations})
	if err != nil {
		return nil, b.fail(ctx, kmsclients.OpUnwrap, s.api, err)
	}
	return resp.GetPlaintext(), nil
}

// Probe asks Status (KMS v1: Version) and reports the key identity Wrap
// would use; a healthz other than "ok" is [kmsclients.ErrUnavailable].
func (b *Backend) Probe(ctx context.Context) (string, error) {
	const op = kmsclients.OpProbe
	if err := ctx.Err(); err != nil {
		return "", b.src.Fail(ctx, op, nil, err)
	}
	callCtx, cancel := b.callContext(ctx)
	defer cancel()
	if b.api == apiV1 {
		resp, err := b.v1.Version(callCtx, &kmsv1.VersionRequest{Version: v1Version})
		if err != nil {
			return "", b.fail(ctx, op, b.api, err)
		}
		if v := resp.GetVersion(); v != v1Version {
			return "", b.src.Errorf(op, kmsclients.ErrPermission, "the custodian speaks KMS %s, not %s", quote(v), v1Version)
		}
		return identity(b.endpoint, ""), nil
	}
	resp, err := b.v2.Status(callCtx, &kmsv2.StatusRequest{})
	if err != nil {
		return "", b.fail(ctx, op, b.api, err)
	}
	switch v, keyID := resp.GetVersion(), resp.GetKeyId(); {
	case resp.GetHealthz() != "ok":
		return "", b.src.Errorf(op, kmsclients.ErrUnavailable, "the custodian is unhealthy: %s", quote(resp.GetHealthz()))
	case v != "v2" && v != "v2beta1":
		return "", b.src.Errorf(op, kmsclients.ErrPermission, "the custodian speaks KMS %s, not v2 (for a KMS v1 plugin set kmsplugin.apiVersion: v1)", quote(v))
	case keyID == "" || len(keyID) > maxKeyID:
		return "", b.src.Errorf(op, kmsclients.ErrUnavailable, "the custodian reports a key_id of %d bytes, want 1 to %d", len(keyID), maxKeyID)
	default:
		return identity(b.endpoint, b.keys.observe(keyID)), nil
	}
}

// callContext applies the configured timeout, if any.
func (b *Backend) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.timeout > 0 {
		return context.WithTimeout(ctx, b.timeout)
	}
	return ctx, func() {}
}

// uid names a request in the custodian's logs; it is not key material.
func (b *Backend) uid() string {
	return "trousseau-" + b.src.Name + "-" + strconv.FormatUint(rand.Uint64(), 16)
}

func apiName(api byte) string {
	if api == apiV1 {
		return "v1beta1"
	}
	return "v2"
}

// quote bounds a custodian's text and escapes control characters.
func quote(s string) string {
	if len(s) > maxReason {
		s = s[:maxReason] + "..."
	}
	return strconv.Quote(s)
}
