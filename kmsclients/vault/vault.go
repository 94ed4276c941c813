// Package vault is a Trousseau backend that wraps shares with a key of
// HashiCorp Vault's transit secrets engine.
//
// Config example (in the serve config):
//
//	backends:
//	  - name: vault-eu
//	    vault:
//	      address: https://vault.eu.example.com:8200
//	      keyName: trousseau
//	      caFile: /etc/trousseau/vault-ca.pem
//	      auth:
//	        kubernetes: {role: trousseau}
//
// Wrap calls transit/encrypt/<key>, Unwrap transit/decrypt/<key>, Probe
// reads transit/keys/<key>. A share is bound to its associated data by
// transit's associated_data for AEAD key types, and by a digest sealed
// with the share for RSA; the key's type decides which, on unwrap too.
// The key identity is "vault:<address>/<namespace/><mount>/<key>:v<N>".
// New makes no call to Vault: the first login runs in the background.
// The backend reads no environment variable, and undoes what the api
// client takes from VAULT_*, so the environment cannot change which
// Vault it talks to or as whom. docs/backends/vault.md has the policy,
// the logins, token renewal and error kinds.
package vault

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Backend is a Vault transit backend.
type Backend struct {
	src     kmsclients.Source
	keyPath string // namespace, mount and key, as identities name them
	idPfx   string
	paths   transitPaths
	auth    *authenticator
	// idle releases the connections of the backend's transports.
	idle []*http.Transport
	// keyType is the transit key's type (fixed at creation; it decides
	// the binding), nil until the key is first read.
	keyType atomic.Pointer[string]
	// cluster is the Vault cluster's ID, nil until learned: unlike the
	// address, the same however Vault is reached.
	cluster atomic.Pointer[string]
}

var (
	_ kmsclients.Backend        = (*Backend)(nil)
	_ kmsclients.PublicWrapper  = (*Backend)(nil)
	_ kmsclients.CustodianKeyer = (*Backend)(nil)
)

type transitPaths struct{ encrypt, decrypt, keys string }

const (
	// maxRetries bounds the api client's retries (a pooled connection
	// to a restarted Vault); the caller's deadline bounds their time.
	maxRetries   = 2
	minRetryWait = 50 * time.Millisecond
	maxRetryWait = 250 * time.Millisecond
	// renewTimeout bounds a token renewal, which runs in the background
	// with no caller and so no caller's deadline.
	renewTimeout = 10 * time.Second
)

// New reads the CA file but makes no call to Vault; the first Probe
// reports whether Vault, the login and the key are usable.
func New(ctx context.Context, name string, cfg Config) (*Backend, error) {
	src := kmsclients.Source{Backend: "vault", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tlsCfg, err := clientTLS(cfg)
	if err != nil {
		return nil, src.Errorf("", nil, "%w", err)
	}
	b := &Backend{
		src:     src,
		keyPath: keyPath(cfg),
		idPfx:   identityPrefix(cfg),
		paths: transitPaths{
			encrypt: cfg.TransitMount + "/encrypt/" + cfg.KeyName,
			decrypt: cfg.TransitMount + "/decrypt/" + cfg.KeyName,
			keys:    cfg.TransitMount + "/keys/" + cfg.KeyName,
		},
	}
	login, err := b.clients(cfg, tlsCfg)
	if err != nil {
		return nil, src.Errorf("", nil, "%w", err)
	}
	b.auth = login
	return b, nil
}

// clients builds the api clients and the authenticator that uses them.
func (b *Backend) clients(cfg Config, tlsCfg *tls.Config) (*authenticator, error) {
	tr := newTransport(tlsCfg, true)
	base, err := newAPIClient(cfg, tr, 0)
	if err != nil {
		return nil, err
	}
	renewer, err := newAPIClient(cfg, tr, renewTimeout)
	if err != nil {
		return nil, err
	}
	b.idle = append(b.idle, tr)
	var cert *certLogin
	if cfg.Auth.Cert != nil {
		cert = &certLogin{cfg: *cfg.Auth.Cert}
		certTLS := tlsCfg.Clone()
		certTLS.GetClientCertificate = cert.getClientCertificate
		if cert.client, err = newAPIClient(cfg, newTransport(certTLS, false), 0); err != nil {
			return nil, err
		}
	}
	return newAuthenticator(newLogin(cfg, base, cert), base, renewer), nil
}

// clientTLS verifies Vault against caFile when set, else the system roots.
func clientTLS(cfg Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	if cfg.CAFile == "" {
		return t, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("vault.caFile: %w", err)
	}
	t.RootCAs = x509.NewCertPool()
	if !t.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("vault.caFile: %s holds no PEM certificate", cfg.CAFile)
	}
	return t, nil
}

// newTransport ignores the environment's proxy settings. The cert
// login's keeps no connections, so each login presents the certificate
// just read.
func newTransport(tlsCfg *tls.Config, keepAlive bool) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		DisableKeepAlives:   !keepAlive,
	}
}

// newAPIClient builds an api client from cfg alone. timeout 0 leaves the
// caller's context as the only deadline.
func newAPIClient(cfg Config, tr *http.Transport, timeout time.Duration) (*api.Client, error) {
	c, err := api.NewClient(&api.Config{
		Address: cfg.Address,
		HttpClient: &http.Client{
			Transport: tr,
			// The api client follows redirects itself, refusing a
			// downgrade to http.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		MaxRetries:   maxRetries,
		MinRetryWait: minRetryWait,
		MaxRetryWait: maxRetryWait,
		CheckRetry:   retryPolicy,
		Timeout:      timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("create Vault client: %w", err)
	}
	// Undo what NewClient takes from VAULT_*; keep the header Vault Agent
	// requires against request forgery.
	c.ClearToken()
	c.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	// The default lookup honours VAULT_WRAP_TTL, which would wrap the
	// answers this backend reads.
	c.SetWrappingLookupFunc(func(string, string) string { return "" })
	return c, nil
}

// retryPolicy is the api client's but does not retry a 500: Vault's
// answer to a ciphertext RSA cannot decrypt, which a retry won't fix.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if err == nil && resp != nil && resp.StatusCode == http.StatusInternalServerError {
		return false, nil
	}
	return api.DefaultRetryPolicy(ctx, resp, err)
}

// Name implements kmsclients.Backend.
func (b *Backend) Name() string { return b.src.Name }

// Close stops token renewal and any login under way.
func (b *Backend) Close() error {
	b.auth.close()
	for _, tr := range b.idle {
		tr.CloseIdleConnections()
	}
	return nil
}

// Wrap encrypts share under the transit key, bound to aad.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kmsclients.Wrapped{}, b.fail(ctx, opWrap, err)
	}
	keyType, err := b.learnKey(ctx)
	if err != nil {
		return kmsclients.Wrapped{}, b.fail(ctx, opWrap, err)
	}
	binding := bindingFor(keyType)
	data := encryptRequest(share, aad, binding)
	s, err := b.call(ctx, opWrap, func(ctx context.Context, c *api.Client) (*api.Secret, error) {
		return c.Logical().WriteWithContext(ctx, b.paths.encrypt, data)
	})
	if err != nil {
		return kmsclients.Wrapped{}, b.fail(ctx, opWrap, err)
	}
	ct, _ := secretString(s, "ciphertext")
	version, ok := ciphertextVersion(ct)
	if !ok {
		return kmsclients.Wrapped{}, b.src.Errorf(opWrap, nil, "Vault answered without a vault:v<N>: ciphertext")
	}
	return kmsclients.Wrapped{Ciphertext: frame(binding, ct), KeyIdentity: b.identity(version)}, nil
}

// encryptRequest is the body of transit/encrypt.
func encryptRequest(share, aad []byte, binding byte) map[string]any {
	if binding == bindAssociatedData {
		return map[string]any{
			"plaintext":       base64.StdEncoding.EncodeToString(share),
			"associated_data": associatedData(aad),
		}
	}
	plaintext := append(aadBinding(aad), share...)
	defer clear(plaintext)
	return map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plaintext)}
}

// Unwrap decrypts a share after checking that it names this backend's
// key and is bound as the key's type requires.
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, b.fail(ctx, opUnwrap, err)
	}
	binding, ct, version, err := b.checkWrapped(w)
	if err != nil {
		return nil, err
	}
	if err := b.checkBindingKind(ctx, binding); err != nil {
		return nil, err
	}
	data := map[string]any{"ciphertext": ct}
	if binding == bindAssociatedData {
		data["associated_data"] = associatedData(aad)
	}
	s, err := b.call(ctx, opUnwrap, func(ctx context.Context, c *api.Client) (*api.Secret, error) {
		return c.Logical().WriteWithContext(ctx, b.paths.decrypt, data)
	})
	if err != nil {
		return nil, b.fail(ctx, opUnwrap, err)
	}
	plaintext, err := decodePlaintext(s)
	if err != nil {
		return nil, b.src.Errorf(opUnwrap, nil, "key version %d: %w", version, err)
	}
	if binding == bindAssociatedData {
		return plaintext, nil
	}
	return b.checkBinding(plaintext, aad)
}

// checkWrapped parses the stored share and its key identity.
func (b *Backend) checkWrapped(w kmsclients.Wrapped) (byte, string, uint64, error) {
	invalid := kmsclients.ErrInvalidCiphertext
	binding, ct, version, err := unframe(w.Ciphertext)
	if err != nil {
		return 0, "", 0, b.src.Errorf(opUnwrap, invalid, "%w", err)
	}
	path, idVersion, ok := parseIdentity(w.KeyIdentity)
	if !ok || path != b.keyPath {
		return 0, "", 0, b.src.Errorf(opUnwrap, invalid, "share was wrapped by key %q, this backend uses %s", w.KeyIdentity, b.keyPath)
	}
	if idVersion != version {
		return 0, "", 0, b.src.Errorf(opUnwrap, invalid, "key identity names version %d, the ciphertext version %d", idVersion, version)
	}
	return binding, ct, version, nil
}

// checkBindingKind refuses a frame bound otherwise than the key's type
// requires: an etcd writer could frame a share made with an RSA public
// key as associated_data-bound and so skip the digest check.
func (b *Backend) checkBindingKind(ctx context.Context, binding byte) error {
	keyType, err := b.learnKey(ctx)
	if err != nil {
		return b.fail(ctx, opUnwrap, err)
	}
	if want := bindingFor(keyType); binding != want {
		return b.src.Errorf(opUnwrap, kmsclients.ErrInvalidCiphertext, "share says it is bound by %s, a key of type %q binds by %s",
			bindingNames[binding], keyType, bindingNames[want])
	}
	return nil
}

// checkBinding compares the digest sealed in front of the share with aad.
func (b *Backend) checkBinding(plaintext, aad []byte) ([]byte, error) {
	defer clear(plaintext)
	if len(plaintext) < bindingSize || subtle.ConstantTimeCompare(plaintext[:bindingSize], aadBinding(aad)) != 1 {
		return nil, b.src.Errorf(opUnwrap, kmsclients.ErrInvalidCiphertext, "associated data differs from the one the share was wrapped with")
	}
	return append([]byte(nil), plaintext[bindingSize:]...), nil
}

func decodePlaintext(s *api.Secret) ([]byte, error) {
	text, ok := secretString(s, "plaintext")
	if !ok {
		return nil, errors.New("Vault answered without a plaintext")
	}
	plaintext, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, errors.New("Vault answered with a plaintext that is not base64")
	}
	return plaintext, nil
}

// Probe reads the transit key, checking the login and that the key can
// encrypt and decrypt, and reports its latest version.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", b.fail(ctx, opProbe, err)
	}
	info, err := b.readKey(ctx)
	if err != nil {
		return "", b.fail(ctx, opProbe, err)
	}
	if err := b.learnCluster(ctx); err != nil {
		return "", b.fail(ctx, opProbe, err)
	}
	return b.identity(info.latest), nil
}

// PublicWrap implements [kmsclients.PublicWrapper]: true for an RSA key,
// whose public half anyone may hold, and true until the key's type is
// known, rather than count a share as proof on a guess.
func (b *Backend) PublicWrap() bool {
	t := b.keyType.Load()
	return t == nil || !aeadTypes[*t]
}

// WrapKindKnown implements kmsclients.WrapKindKnower: whether the key's
// type has been read yet.
func (b *Backend) WrapKindKnown() bool { return b.keyType.Load() != nil }

// CustodianKey implements [kmsclients.CustodianKeyer]: this backend's
// key is named by cluster ID and key path, so one key reached through two
// addresses is one custodian. Other identities, and all before Vault was
// reached, name themselves.
func (b *Backend) CustodianKey(keyIdentity string) string {
	path, _, ok := parseIdentity(keyIdentity)
	cluster := b.cluster.Load()
	if !ok || path != b.keyPath || cluster == nil {
		return keyIdentity
	}
	return custodianKey(*cluster, path)
}

// learnKey returns the key's type, reading the key and the cluster's ID
// only the first time.
func (b *Backend) learnKey(ctx context.Context) (string, error) {
	if t := b.keyType.Load(); t != nil && b.cluster.Load() != nil {
		return *t, nil
	}
	info, err := b.readKey(ctx)
	if err != nil {
		return "", err
	}
	if err := b.learnCluster(ctx); err != nil {
		return "", err
	}
	return info.keyType, nil
}

// learnCluster asks sys/health (no token, root namespace) for the
// cluster's ID.
func (b *Backend) learnCluster(ctx context.Context) error {
	if b.cluster.Load() != nil {
		return nil
	}
	h, err := b.auth.base.WithNamespace("").Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("read the cluster ID: %w", classify(opProbe, err))
	}
	if !clusterIDRE.MatchString(h.ClusterID) {
		return fmt.Errorf("read the cluster ID: Vault reports %q (sealed, or not initialised): %w", truncate(h.ClusterID, 80), kmsclients.ErrUnavailable)
	}
	id := h.ClusterID
	b.cluster.CompareAndSwap(nil, &id)
	return nil
}

// clusterIDRE bounds the cluster ID (a UUID) used in a custodian's name.
var clusterIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// keyInfo is what the backend needs from transit/keys/<key>.
type keyInfo struct {
	latest  uint64
	keyType string
}

// readKey reads the key; its answers are sorted as Probe's are.
func (b *Backend) readKey(ctx context.Context) (keyInfo, error) {
	s, err := b.call(ctx, opProbe, func(ctx context.Context, c *api.Client) (*api.Secret, error) {
		return c.Logical().ReadWithContext(ctx, b.paths.keys)
	})
	if err != nil {
		return keyInfo{}, err
	}
	if s == nil || s.Data == nil {
		return keyInfo{}, fmt.Errorf("transit key %s not found: %w", b.keyPath, kmsclients.ErrPermission)
	}
	info, err := parseKeyInfo(s.Data)
	if err != nil {
		return keyInfo{}, fmt.Errorf("transit key %s: %w", b.keyPath, err)
	}
	b.keyType.Store(&info.keyType)
	return info, nil
}

// aeadTypes are the transit key types that take associated_data.
var aeadTypes = map[string]bool{"aes128-gcm96": true, "aes256-gcm96": true, "chacha20-poly1305": true}

// bindingFor: transit's associated_data for AEAD types, a sealed digest
// for the others (RSA), which refuse associated_data.
func bindingFor(keyType string) byte {
	if aeadTypes[keyType] {
		return bindAssociatedData
	}
	return bindInPlaintext
}

func parseKeyInfo(data map[string]any) (keyInfo, error) {
	keyType, _ := data["type"].(string)
	enc, _ := data["supports_encryption"].(bool)
	dec, _ := data["supports_decryption"].(bool)
	if !enc || !dec {
		return keyInfo{}, fmt.Errorf("key type %q cannot encrypt and decrypt: %w", keyType, kmsclients.ErrPermission)
	}
	latest, ok := jsonUint(data["latest_version"])
	if !ok || latest == 0 {
		return keyInfo{}, errors.New("Vault reports no latest_version")
	}
	return keyInfo{latest: latest, keyType: keyType}, nil
}

func jsonUint(v any) (uint64, bool) {
	switch n := v.(type) {
	case json.Number:
		u, err := strconv.ParseUint(n.String(), 10, 32)
		return u, err == nil
	case float64:
		return uint64(n), n >= 0 && n <= 1<<32 && n == float64(uint64(n))
	}
	return 0, false
}

func secretString(s *api.Secret, field string) (string, bool) {
	if s == nil || s.Data == nil {
		return "", false
	}
	v, ok := s.Data[field].(string)
	return v, ok && v != ""
}

func (b *Backend) identity(version uint64) string {
	return b.idPfx + strconv.FormatUint(version, 10)
}

// call makes a request with the current token; on a 403 it logs in
// again (or takes a token another caller just got) and tries once more.
func (b *Backend) call(ctx context.Context, op string, req func(context.Context, *api.Client) (*api.Secret, error)) (*api.Secret, error) {
	s, err := b.auth.session(ctx)
	if err != nil {
		return nil, err
	}
	out, err := req(ctx, s.client)
	if err = classify(op, err); !isForbidden(err) {
		return out, err
	}
	fresh, lerr := b.auth.replace(ctx, s)
	if errors.Is(lerr, errThrottled) {
		return nil, err
	}
	if lerr != nil {
		return nil, fmt.Errorf("log in again after Vault refused the token (%v): %w", err, lerr)
	}
	out, err = req(ctx, fresh.client)
	return out, classify(op, err)
}

// fail wraps err with the kind classify gives it, under
// [kmsclients.Source.Fail]'s context rule.
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	return b.src.Fail(ctx, op, nil, err)
}
