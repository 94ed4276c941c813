package vault

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Config is the YAML block `vault: {...}` of a backend.
type Config struct {
	// Address is the Vault server's URL, scheme://host[:port] with no path.
	// Plain http is accepted only on loopback (a Vault Agent or proxy in
	// the same pod), because Wrap sends the share itself.
	Address string `json:"address"`
	// TransitMount is where the transit engine is mounted ("transit").
	TransitMount string `json:"transitMount,omitempty"`
	// KeyName is the transit key that wraps the shares.
	KeyName string `json:"keyName"`
	// Namespace is a Vault Enterprise or HCP namespace; empty for none.
	Namespace string `json:"namespace,omitempty"`
	// CAFile is a PEM bundle that verifies the server's certificate instead
	// of the system roots.
	CAFile string `json:"caFile,omitempty"`
	// TLSServerName is the name checked in the server's certificate, when
	// it differs from the host of Address.
	TLSServerName string `json:"tlsServerName,omitempty"`
	// Auth is how the backend logs in to Vault.
	Auth Auth `json:"auth"`
}

// Auth holds exactly one login method. Secrets are files, read at every
// login, so a rotated secret is picked up without a restart.
type Auth struct {
	// TokenFile holds a Vault token, as a Vault Agent sink writes it.
	TokenFile  string          `json:"tokenFile,omitempty"`
	AppRole    *AppRoleAuth    `json:"appRole,omitempty"`
	Kubernetes *KubernetesAuth `json:"kubernetes,omitempty"`
	Cert       *CertAuth       `json:"cert,omitempty"`
}

// AppRoleAuth logs in with a role ID and a secret ID read from a file.
type AppRoleAuth struct {
	RoleID       string `json:"roleID"`
	SecretIDFile string `json:"secretIDFile"`
	// Mount is the auth mount path ("approle").
	Mount string `json:"mount,omitempty"`
}

// KubernetesAuth logs in with the pod's service-account token.
type KubernetesAuth struct {
	Role string `json:"role"`
	// JWTFile defaults to the token Kubernetes mounts in every pod.
	JWTFile string `json:"jwtFile,omitempty"`
	// Mount is the auth mount path ("kubernetes").
	Mount string `json:"mount,omitempty"`
}

// CertAuth logs in with a TLS client certificate (Address must be https).
type CertAuth struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// Mount is the auth mount path ("cert").
	Mount string `json:"mount,omitempty"`
}

// Defaults of the optional fields.
const (
	DefaultTransitMount    = "transit"
	DefaultAppRoleMount    = "approle"
	DefaultKubernetesMount = "kubernetes"
	DefaultCertMount       = "cert"
	DefaultJWTFile         = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// withDefaults fills optional fields on a copy of the auth blocks.
func (c Config) withDefaults() Config {
	c.TransitMount = orDefault(c.TransitMount, DefaultTransitMount)
	c.Namespace = strings.Trim(c.Namespace, "/")
	c.Address = strings.TrimSuffix(c.Address, "/")
	if a := c.Auth.AppRole; a != nil {
		c.Auth.AppRole = &AppRoleAuth{RoleID: a.RoleID, SecretIDFile: a.SecretIDFile, Mount: orDefault(a.Mount, DefaultAppRoleMount)}
	}
	if k := c.Auth.Kubernetes; k != nil {
		c.Auth.Kubernetes = &KubernetesAuth{Role: k.Role, JWTFile: orDefault(k.JWTFile, DefaultJWTFile), Mount: orDefault(k.Mount, DefaultKubernetesMount)}
	}
	if ca := c.Auth.Cert; ca != nil {
		c.Auth.Cert = &CertAuth{CertFile: ca.CertFile, KeyFile: ca.KeyFile, Mount: orDefault(ca.Mount, DefaultCertMount)}
	}
	return c
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Validate names the field at fault. Empty optional fields are valid: they
// take their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	u, err := parseAddress(c.Address)
	if err != nil {
		return fmt.Errorf("vault.address: %w", err)
	}
	if err := validatePath(c.TransitMount); err != nil {
		return fmt.Errorf("vault.transitMount: %w", err)
	}
	if err := validateKeyName(c.KeyName); err != nil {
		return fmt.Errorf("vault.keyName: %w", err)
	}
	if err := validateOptionalPath(c.Namespace); err != nil {
		return fmt.Errorf("vault.namespace: %w", err)
	}
	if err := c.validateTLS(u); err != nil {
		return err
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	if n := len(identityPrefix(c)) + len("4294967295"); n > kmsclients.MaxKeyIdentitySize {
		return fmt.Errorf("vault: address, namespace, transitMount and keyName make a key identity of %d bytes (limit %d)", n, kmsclients.MaxKeyIdentitySize)
	}
	return nil
}

func (c Config) validateTLS(u *url.URL) error {
	plain := u.Scheme == "http"
	switch {
	case plain && c.CAFile != "":
		return errors.New("vault.caFile: set, but vault.address is plain http")
	case plain && c.TLSServerName != "":
		return errors.New("vault.tlsServerName: set, but vault.address is plain http")
	case plain && c.Auth.Cert != nil:
		return errors.New("vault.auth.cert: certificate login needs an https vault.address")
	case c.TLSServerName != "" && !hostnameRE.MatchString(c.TLSServerName):
		return fmt.Errorf("vault.tlsServerName: %q is not a host name", c.TLSServerName)
	}
	return nil
}

func (a Auth) validate() error {
	var set []string
	for name, on := range map[string]bool{"appRole": a.AppRole != nil, "cert": a.Cert != nil, "kubernetes": a.Kubernetes != nil, "tokenFile": a.TokenFile != ""} {
		if on {
			set = append(set, name)
		}
	}
	if len(set) != 1 {
		got := "none"
		if len(set) > 1 {
			slices.Sort(set)
			got = strings.Join(set, " and ")
		}
		return fmt.Errorf("vault.auth: exactly one of tokenFile, appRole, kubernetes or cert is required; got %s", got)
	}
	switch {
	case a.AppRole != nil:
		return a.AppRole.validate()
	case a.Kubernetes != nil:
		return a.Kubernetes.validate()
	case a.Cert != nil:
		return a.Cert.validate()
	}
	return nil
}

func (a AppRoleAuth) validate() error {
	switch {
	case a.RoleID == "":
		return errors.New("vault.auth.appRole.roleID: required")
	case a.SecretIDFile == "":
		return errors.New("vault.auth.appRole.secretIDFile: required (the secret ID is read from a file, never given inline)")
	}
	if err := validatePath(a.Mount); err != nil {
		return fmt.Errorf("vault.auth.appRole.mount: %w", err)
	}
	return nil
}

func (k KubernetesAuth) validate() error {
	if k.Role == "" {
		return errors.New("vault.auth.kubernetes.role: required")
	}
	if err := validatePath(k.Mount); err != nil {
		return fmt.Errorf("vault.auth.kubernetes.mount: %w", err)
	}
	return nil
}

func (c CertAuth) validate() error {
	switch {
	case c.CertFile == "":
		return errors.New("vault.auth.cert.certFile: required")
	case c.KeyFile == "":
		return errors.New("vault.auth.cert.keyFile: required")
	}
	if err := validatePath(c.Mount); err != nil {
		return fmt.Errorf("vault.auth.cert.mount: %w", err)
	}
	return nil
}

var (
	// segmentRE is one segment of a Vault mount or namespace path.
	segmentRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	// keyNameRE follows the names transit accepts for keys.
	keyNameRE  = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
)

// parseAddress accepts scheme://host[:port]. A path is refused because
// the key identity is read back as address + "/" + mount path.
func parseAddress(addr string) (*url.URL, error) {
	if addr == "" {
		return nil, errors.New("required")
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not an absolute URL such as https://vault.example.com:8200", addr)
	}
	if u.Path != "" {
		return nil, fmt.Errorf("%q: want no path, only scheme://host[:port]", addr)
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if isLoopback(u.Hostname()) {
			return u, nil
		}
		return nil, fmt.Errorf("%q: plain http is allowed only on loopback (a Vault Agent in the pod); use https", addr)
	}
	return nil, fmt.Errorf("%q: scheme must be https", addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validatePath refuses empty, "." and ".." segments, which would let a
// request escape to another path.
func validatePath(p string) error {
	if p == "" {
		return errors.New("required")
	}
	for _, seg := range strings.Split(p, "/") {
		if !segmentRE.MatchString(seg) || seg == "." || seg == ".." {
			return fmt.Errorf("%q is not a mount path (segments of [A-Za-z0-9_.-] joined by /)", p)
		}
	}
	return nil
}

func validateOptionalPath(p string) error {
	if p == "" {
		return nil
	}
	return validatePath(p)
}

func validateKeyName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if !keyNameRE.MatchString(name) {
		return fmt.Errorf("%q is not a transit key name (letters, digits, _ . -)", name)
	}
	return nil
}
