package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"

	"github.com/hashicorp/vault/api"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// newLogin returns the login of the configured method; cert is set only
// for cert auth.
func newLogin(cfg Config, base *api.Client, cert *certLogin) loginFunc {
	a := cfg.Auth
	switch {
	case a.AppRole != nil:
		return appRoleLogin(base, *a.AppRole)
	case a.Kubernetes != nil:
		return kubernetesLogin(base, *a.Kubernetes)
	case a.Cert != nil:
		return cert.login
	default:
		return tokenFileLogin(base, a.TokenFile)
	}
}

// tokenFileLogin reads a token from a file and looks it up, to learn
// whether it is valid and when it expires.
func tokenFileLogin(base *api.Client, path string) loginFunc {
	return func(ctx context.Context) (*api.SecretAuth, error) {
		token, err := readSecretFile("token file", path)
		if err != nil {
			return nil, err
		}
		c := base.WithRequestCallbacks(func(r *api.Request) { r.ClientToken = token })
		s, err := c.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("look up the token of %s: %w", path, classify(opLogin, err))
		}
		ttl, err := s.TokenTTL()
		if err != nil {
			return nil, fmt.Errorf("look up the token of %s: %w", path, err)
		}
		renewable, _ := s.TokenIsRenewable()
		return &api.SecretAuth{ClientToken: token, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}, nil
	}
}

func appRoleLogin(base *api.Client, cfg AppRoleAuth) loginFunc {
	return func(ctx context.Context) (*api.SecretAuth, error) {
		secretID, err := readSecretFile("secret ID file", cfg.SecretIDFile)
		if err != nil {
			return nil, err
		}
		return writeLogin(ctx, base, cfg.Mount, map[string]any{"role_id": cfg.RoleID, "secret_id": secretID})
	}
}

func kubernetesLogin(base *api.Client, cfg KubernetesAuth) loginFunc {
	return func(ctx context.Context) (*api.SecretAuth, error) {
		jwt, err := readSecretFile("service-account token file", cfg.JWTFile)
		if err != nil {
			return nil, err
		}
		return writeLogin(ctx, base, cfg.Mount, map[string]any{"role": cfg.Role, "jwt": jwt})
	}
}

// certLogin logs in with a client certificate, on a new connection each
// time so the certificate just read is presented.
type certLogin struct {
	cfg    CertAuth
	client *api.Client
	cert   atomic.Pointer[tls.Certificate]
}

// getClientCertificate ignores the server's acceptable CAs: the cert
// auth method trusts CAs the listener need not know.
func (c *certLogin) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert := c.cert.Load(); cert != nil {
		return cert, nil
	}
	return &tls.Certificate{}, nil
}

func (c *certLogin) login(ctx context.Context) (*api.SecretAuth, error) {
	cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
	if err != nil {
		return nil, certFileError(c.cfg, err)
	}
	c.cert.Store(&cert)
	return writeLogin(ctx, c.client, c.cfg.Mount, map[string]any{})
}

func certFileError(cfg CertAuth, err error) error {
	kind := kmsclients.ErrPermission // unparsable, or a key that does not match
	if errors.Is(err, fs.ErrNotExist) {
		kind = kmsclients.ErrUnavailable
	}
	return fmt.Errorf("client certificate %s, key %s: %w: %w", cfg.CertFile, cfg.KeyFile, kind, unwrapPathError(err))
}

// writeLogin posts to auth/<mount>/login. Any refusal is a permission
// error, whatever its status: approle answers 400 to a wrong secret ID.
func writeLogin(ctx context.Context, c *api.Client, mount string, data map[string]any) (*api.SecretAuth, error) {
	s, err := c.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", data)
	if err != nil {
		return nil, fmt.Errorf("log in at auth/%s: %w", mount, classify(opLogin, err))
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("log in at auth/%s: Vault answered without a token: %w", mount, kmsclients.ErrPermission)
	}
	return s.Auth, nil
}

// maxSecretSize bounds what is read from a secret file; service-account
// tokens are the largest, a few kilobytes.
const maxSecretSize = 64 << 10

// readSecretFile reads a trimmed secret. A missing file is unavailable
// (an Agent sink not yet written); unreadable or empty is permission.
// The error never holds the content.
func readSecretFile(what, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		kind := kmsclients.ErrUnavailable
		if errors.Is(err, fs.ErrPermission) {
			kind = kmsclients.ErrPermission
		}
		return "", fmt.Errorf("%s %s: %w: %w", what, path, kind, unwrapPathError(err))
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %w", what, path, kmsclients.ErrUnavailable, unwrapPathError(err))
	}
	secret := bytes.TrimSpace(raw)
	switch {
	case len(raw) > maxSecretSize:
		return "", fmt.Errorf("%s %s: larger than %d bytes: %w", what, path, maxSecretSize, kmsclients.ErrPermission)
	case len(secret) == 0:
		return "", fmt.Errorf("%s %s: empty: %w", what, path, kmsclients.ErrPermission)
	}
	return string(secret), nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
