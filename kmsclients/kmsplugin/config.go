package kmsplugin

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"unicode"

	kmsutil "k8s.io/kms/pkg/util"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Config is the YAML block `kmsplugin: {...}` of a backend.
type Config struct {
	// Endpoint is the custodian plugin's socket, as kube-apiserver's
	// EncryptionConfiguration names it: unix:///absolute/path.
	Endpoint string `json:"endpoint"`
	// APIVersion is the KMS API the custodian serves: "v2" (the default)
	// or "v1" (KMS v1beta1, for older vendor plugins).
	APIVersion string `json:"apiVersion,omitempty"`
	// Timeout, when set, bounds each call to the custodian (like the
	// EncryptionConfiguration's timeout). The caller's deadline always
	// applies; unset, it is the only one.
	Timeout Duration `json:"timeout,omitzero"`
	// PublicKey says that the custodian wraps with a public key (RSA, as
	// Azure's kubernetes-kms always does): anyone holding that public
	// key can make a ciphertext it decrypts, so its shares prove nothing
	// about who made a DEK (see kmsclients.PublicWrapper). Trousseau
	// cannot tell from the KMS API; the operator says so.
	PublicKey bool `json:"publicKey,omitempty"`
}

// Duration is a time.Duration written as "3s", "500ms": the config file's
// one duration type (config.Duration is it too), so that the config's
// strict field walk names a bare number here by its path.
type Duration = kmsclients.Duration

// The API versions of Config.APIVersion.
const (
	APIVersionV2 = "v2"
	APIVersionV1 = "v1"
)

// maxSocketPath is the longest path a unix socket can be reached by on
// Linux: sun_path holds 108 bytes, with a terminating NUL.
const maxSocketPath = 107

// Validate names the field at fault.
func (c Config) Validate() error {
	if _, err := socketPath(c.Endpoint); err != nil {
		return fmt.Errorf("kmsplugin.endpoint: %w", err)
	}
	if _, err := c.api(); err != nil {
		return fmt.Errorf("kmsplugin.apiVersion: %w", err)
	}
	if c.Timeout.Duration < 0 {
		return fmt.Errorf("kmsplugin.timeout: must not be negative, got %s", c.Timeout.Duration)
	}
	return nil
}

// api is the KMS API that Wrap and Probe use.
// FIPSWarning is what a FIPS 140-3 deployment should know of a custodian.
func (c Config) FIPSWarning() string {
	return "a kmsplugin custodian encrypts in its own process, outside this module: run a FIPS build of that plugin"
}

func (c Config) api() (byte, error) {
	switch c.APIVersion {
	case "", APIVersionV2:
		return apiV2, nil
	case APIVersionV1:
		return apiV1, nil
	}
	return 0, fmt.Errorf("want %s or %s, got %q", APIVersionV2, APIVersionV1, c.APIVersion)
}

// socketPath reads unix:///absolute/path with kube-apiserver's own parser
// (k8s.io/kms/pkg/util), then refuses what it would accept but a
// custodian must not be:
//   - an abstract socket (unix:///@name): it has no permissions, so any
//     process of the network namespace that binds the name first would
//     be sent every share in the clear;
//   - a host part (unix://var/run/x.sock), which the parser drops
//     silently, leaving /run/x.sock;
//   - a ':' in the path, which would make key identities ambiguous
//     (see identity);
//   - a path longer than a unix socket can have.
func socketPath(endpoint string) (string, error) {
	if endpoint == "" {
		return "", errors.New("required (unix:///path/to/plugin.sock)")
	}
	path, err := kmsutil.ParseEndpoint(endpoint)
	if err != nil {
		return "", fmt.Errorf("%q: %w", endpoint, err)
	}
	u, _ := url.Parse(endpoint) // ParseEndpoint parsed it already
	switch {
	case u.Host != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", fmt.Errorf("%q: want unix:///absolute/path (three slashes), with no host, query or fragment", endpoint)
	case strings.HasPrefix(path, "@"):
		return "", fmt.Errorf("%q is an abstract socket: it has no file permissions, so any process in the network namespace could pose as the custodian and be sent shares; use a socket file", endpoint)
	case !filepath.IsAbs(path):
		return "", fmt.Errorf("%q: the socket path must be absolute", endpoint)
	case strings.Contains(path, ":"):
		return "", fmt.Errorf("%q: the socket path must not contain ':' (it would make key identities ambiguous)", endpoint)
	case strings.IndexFunc(path, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0:
		return "", fmt.Errorf("%q: the socket path must not contain spaces or control characters", endpoint)
	case len(filepath.Clean(path)) > maxSocketPath:
		return "", fmt.Errorf("%q: the socket path is %d bytes long; a unix socket path holds at most %d", endpoint, len(filepath.Clean(path)), maxSocketPath)
	}
	return filepath.Clean(path), nil
}
