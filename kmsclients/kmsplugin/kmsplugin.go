// Package kmsplugin is a Trousseau backend whose custodian is any
// Kubernetes KMS plugin: a vendor's KMS v2 (or v1beta1) plugin socket,
// such as aws-encryption-provider, kubernetes-kms (Azure) or
// k8s-cloudkms-plugin (Google), or another Trousseau.
//
// Config example (in the backends list of the serve config):
//
//   - name: aws
//     kmsplugin: {endpoint: unix:///var/run/kmsplugin/aws/socket.sock, timeout: 3s}
//   - name: azure
//     kmsplugin: {endpoint: unix:///var/run/kmsplugin/azure/socket.sock, timeout: 3s, publicKey: true}
//   - name: legacy-hsm
//     kmsplugin: {endpoint: unix:///var/run/kmsplugin/hsm/socket.sock, apiVersion: v1}
//
// It speaks the KMS API through the generated k8s.io/kms clients (apis/v2
// and apis/v1beta1) over the unix socket, with insecure transport
// credentials, as kube-apiserver does. New makes no call: a custodian
// that is down when the plugin starts is a backend that is down.
//
// Wrap is the custodian's Encrypt and Unwrap its Decrypt. The custodian's
// ciphertext, key_id and annotations are kept in the wrapped share (see
// frame.go for the format) and handed back to Decrypt. A custodian that
// only encodes (as test and mock plugins do) is refused: see [Backend.vet]
// and cleartext.go. The KMS API has no
// associated data, so the share is bound to its DEK and index inside the
// plaintext sent: binding || share, where binding is the first 16 bytes
// of SHA-256 of a label and the associated data; Unwrap compares it in
// constant time, and a mismatch (a custodian returning another
// plaintext, a share moved to another DEK or index) is
// kmsclients.ErrInvalidCiphertext.
//
// The key identity is "kmsplugin:<endpoint>:<key_id>", key_id being what
// the custodian names its key (KMS v1 has none: "kmsplugin:<endpoint>").
// Probe asks Status: a healthz other than "ok" is kmsclients.ErrUnavailable
// with the custodian's reason in the error (so in the plugin's log).
//
// Key rotation and flip-flops: the envelope rotates the DEK when the
// identity a Probe reports differs from the one the current DEK's share
// was wrapped under. A custodian whose key_id flip-flops (A, B, A: two
// replicas behind one socket that disagree for a moment, a failover and
// back) must not rotate it twice. So Probe reports a new key_id only once
// the custodian has named it twice in a row (in Status or Encrypt
// answers); until then it keeps reporting the key_id it reported before.
// And Wrap, like kube-apiserver with the key_id of Encrypt and Status,
// accepts only an Encrypt under the key_id Probe reports: one under
// another counts as a sighting and fails as unavailable, so a rotation
// made meanwhile is postponed to the next probe rather than made under a
// key_id that Probe does not report (which would rotate again). So the
// identity of every share is one Probe reported: A, B, A rotates nothing;
// a real rotation to B rotates once, one probe interval later than it
// could. The first key_id a backend sees is reported at once. The state is
// in memory: a restart in the middle of a flip-flop may rotate once.
//
// A custodian whose KMS key is asymmetric (RSA) wraps with a public key
// that anyone may hold, so such a share proves nothing about who made a
// DEK: Config.PublicKey says so, and PublicWrap reports it.
//
// Two backends on one custodian would hold two shares: CheckEndpoints
// (for the config layer) refuses an endpoint that is Trousseau's own
// socket or another kmsplugin backend's, CheckNotSelf (for serve, once it
// listens) one that reaches Trousseau's socket by any path, bind mounts
// included, and CustodianKey names a key by key_id alone, whatever the
// endpoint, so two custodians reporting one key_id are one.
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
	// maxResponse bounds what a custodian may send: the KMS v2 limits
	// (1 KiB ciphertext and key_id, 32 KiB of annotations) and room for
	// framing. gRPC's default would be 4 MiB.
	maxResponse = 64 << 10
	// maxReconnectDelay keeps gRPC's reconnection backoff short: the
	// socket is local and a failed connect costs nothing, and a longer
	// backoff would keep a custodian that came back out of use (calls
	// fail at once while the channel waits).
	maxReconnectDelay = time.Second
	// v1Version is what KMS v1beta1 requests and answers carry.
	v1Version = "v1beta1"
	// maxReason bounds the custodian's text (healthz, error messages)
	// kept in an error.
	maxReason = 256
)

// New returns a backend for cfg. It validates name and cfg and makes no
// call, so ctx goes unused: the connection is made at the first Probe,
// Wrap or Unwrap.
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
// refused permission can be told from a custodian that is down.
//
// The socket's directory is checked at every dial: whoever could write it
// could put a fake custodian there, which would be handed shares to wrap.
// The path is resolved as the dial resolves it: when the endpoint is a
// symlink, or goes through one, the directory the socket really is in is
// checked, and so are the directories of the symlinks. The custodian may
// run as another user than Trousseau, so the owner of that directory is
// not judged; write access for group or others is refused. The
// directories on the way to it (its ancestors, and those the symlinks go
// through) may be written only by root, Trousseau's user or that owner,
// except shared ones with the sticky bit (like /tmp): whoever else could
// write one could swap the directory below it for one of theirs (see
// internal/safedir).
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

// CustodianKey implements kmsclients.CustodianKeyer: custodians that
// report one key_id are one custodian, whatever their endpoints.
func (b *Backend) CustodianKey(keyIdentity string) string { return custodianKey(keyIdentity) }

// PublicWrap implements kmsclients.PublicWrapper, as configured: whether
// anyone holding the custodian's public key could make shares it unwraps.
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

// Unwrap has the custodian decrypt a share that Wrap stored, with the
// KMS API, key_id and annotations it was wrapped with, and checks that
// what comes back is bound to aad.
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

// Probe asks the custodian's Status (KMS v1: Version) and reports the
// key identity Wrap would use, under the rule of the package comment.
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

// callContext bounds one call by the configured timeout, if any, within
// the caller's deadline.
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

// quote shows a custodian's text, bounded and with control characters
// escaped.
func quote(s string) string {
	if len(s) > maxReason {
		s = s[:maxReason] + "..."
	}
	return strconv.Quote(s)
}
