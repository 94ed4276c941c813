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
	// Endpoint is the plugin's socket: unix:///absolute/path.
	Endpoint string `json:"endpoint"`
	// APIVersion is "v2" (the default) or "v1" (KMS v1beta1).
	APIVersion string `json:"apiVersion,omitempty"`
	// Timeout, when set, bounds each call, within the caller's deadline.
	Timeout Duration `json:"timeout,omitzero"`
	// PublicKey says the custodian wraps with a public key (as Azure's
	// kubernetes-kms does), which the KMS API cannot tell: see
	// [kmsclients.PublicWrapper].
	PublicKey bool `json:"publicKey,omitempty"`
}

// Duration is a time.Duration written as "3s": the config's one duration
// type, so its strict decoding names a bare number by its path.
type Duration = kmsclients.Duration

// The API versions of Config.APIVersion.
const (
	APIVersionV2 = "v2"
	APIVersionV1 = "v1"
)

// maxSocketPath: Linux's sun_path holds 108 bytes with the NUL.
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

// FIPSWarning is what a FIPS 140-3 deployment should know of a custodian.
func (c Config) FIPSWarning() string {
	return "a kmsplugin custodian encrypts in its own process, outside this module: run a FIPS build of that plugin"
}

// api is the KMS API that Wrap and Probe use.
func (c Config) api() (byte, error) {
	switch c.APIVersion {
	case "", APIVersionV2:
		return apiV2, nil
	case APIVersionV1:
		return apiV1, nil
	}
	return 0, fmt.Errorf("want %s or %s, got %q", APIVersionV2, APIVersionV1, c.APIVersion)
}

// socketPath parses with kube-apiserver's parser, then refuses an
// abstract socket (no permissions: whoever binds the name first gets the
// shares), a host part (the parser drops it silently), a ':' (identities
// would be ambiguous) and a path too long for a socket.
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
