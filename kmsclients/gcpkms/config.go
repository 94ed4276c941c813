package gcpkms

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Config is the YAML block `gcpkms: {...}` of a backend.
type Config struct {
	// KeyName is projects/P/locations/L/keyRings/R/cryptoKeys/K, no
	// version: a new primary version is what rotates the DEK.
	KeyName string `json:"keyName"`
	// Endpoint overrides cloudkms.googleapis.com:443 with a host:port;
	// a loopback IP is dialled in plaintext without credentials.
	Endpoint string `json:"endpoint,omitempty"`
	// CredentialsFile is a credentials JSON file; empty uses Application
	// Default Credentials.
	CredentialsFile string `json:"credentialsFile,omitempty"`
	// ImpersonateServiceAccount is the email every call is made as,
	// with tokens minted by the credentials above.
	ImpersonateServiceAccount string `json:"impersonateServiceAccount,omitempty"`
	// Timeout, when set, bounds each operation, retries included,
	// within the caller's deadline.
	Timeout Duration `json:"timeout,omitzero"`
}

// Duration is the config file's one duration type ("3s", "500ms").
type Duration = kmsclients.Duration

// Validate names the field at fault.
func (c Config) Validate() error {
	if _, err := parseKeyName(c.KeyName); err != nil {
		return fmt.Errorf("gcpkms.keyName: %w", err)
	}
	if err := validateEndpoint(c.Endpoint); err != nil {
		return fmt.Errorf("gcpkms.endpoint: %w", err)
	}
	if c.CredentialsFile != "" && strings.TrimSpace(c.CredentialsFile) != c.CredentialsFile {
		return fmt.Errorf("gcpkms.credentialsFile: %q has leading or trailing spaces", c.CredentialsFile)
	}
	if err := validateServiceAccount(c.ImpersonateServiceAccount); err != nil {
		return fmt.Errorf("gcpkms.impersonateServiceAccount: %w", err)
	}
	if c.plaintext() {
		// Never send a token in the clear, and never let a config look
		// as if it used credentials that it does not.
		for _, f := range []struct{ name, value string }{
			{"credentialsFile", c.CredentialsFile},
			{"impersonateServiceAccount", c.ImpersonateServiceAccount},
		} {
			if f.value != "" {
				return fmt.Errorf("gcpkms.%s: not used with the loopback endpoint %s, which is dialled in plaintext without credentials", f.name, c.Endpoint)
			}
		}
	}
	if c.Timeout.Duration < 0 {
		return fmt.Errorf("gcpkms.timeout: must not be negative, got %s", c.Timeout.Duration)
	}
	return nil
}

// plaintext reports whether the endpoint is a loopback IP address, which
// is dialled without TLS and without credentials.
func (c Config) plaintext() bool {
	host, _, err := net.SplitHostPort(c.Endpoint)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// validateEndpoint wants host:port, as gRPC dials it.
func validateEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	if strings.Contains(endpoint, "://") {
		return fmt.Errorf("%q: want host:port (a gRPC endpoint), without a scheme", endpoint)
	}
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return fmt.Errorf("%q: want host:port, such as cloudkms.googleapis.com:443", endpoint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be 1 to 65535", endpoint)
	}
	if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("%q: %q is not a host name or IP address", endpoint, host)
	}
	return nil
}

var serviceAccountRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}@[a-z0-9][a-z0-9.-]{0,252}\.[a-z]{2,}$`)

func validateServiceAccount(sa string) error {
	if sa == "" || serviceAccountRE.MatchString(sa) {
		return nil
	}
	return fmt.Errorf("%q is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)", sa)
}

// keyName is a parsed CryptoKey resource name.
type keyName struct {
	project, location, keyRing, key string
}

func (k keyName) String() string {
	return "projects/" + k.project + "/locations/" + k.location + "/keyRings/" + k.keyRing + "/cryptoKeys/" + k.key
}

// sameBut reports whether k and o differ at most in the project, which
// Cloud KMS may spell as a project ID or a project number.
func (k keyName) sameBut(o keyName) bool {
	return k.location == o.location && k.keyRing == o.keyRing && k.key == o.key
}

// The parts of a resource name. A project is an ID (my-project,
// example.com:my-project) or a number.
var (
	projectRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]{0,98}[a-z0-9]$`)
	locationRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	kmsIDRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
	versionRE  = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	numberRE   = regexp.MustCompile(`^[0-9]+$`)
)

// parseKeyName parses a CryptoKey resource name. A key version's name is
// refused, with the key to give instead.
func parseKeyName(s string) (keyName, error) {
	if s == "" {
		return keyName{}, errors.New("required")
	}
	if k, v, err := parseVersionName(s); err == nil {
		return keyName{}, fmt.Errorf("%q pins key version %s: Cloud KMS encrypts with the key's primary version, so give the key, %s", s, v, k)
	}
	k, rest, err := parseKeyPrefix(s)
	if err != nil {
		return keyName{}, err
	}
	if rest != "" {
		return keyName{}, fmt.Errorf("%q: want projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY", s)
	}
	return k, nil
}

// parseVersionName parses a CryptoKeyVersion resource name.
func parseVersionName(s string) (keyName, string, error) {
	k, rest, err := parseKeyPrefix(s)
	if err != nil {
		return keyName{}, "", err
	}
	v, ok := strings.CutPrefix(rest, "/cryptoKeyVersions/")
	if !ok || !versionRE.MatchString(v) {
		return keyName{}, "", fmt.Errorf("%q is not the name of a key version (.../cryptoKeys/KEY/cryptoKeyVersions/N)", s)
	}
	return k, v, nil
}

// parseKeyPrefix parses the key name at the start of s and returns what
// follows it.
func parseKeyPrefix(s string) (keyName, string, error) {
	const maxName = 400 // longer than any valid key version name
	bad := func() (keyName, string, error) {
		return keyName{}, "", fmt.Errorf("%q: want projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY", s)
	}
	if len(s) > maxName {
		return keyName{}, "", fmt.Errorf("a name of %d bytes (limit %d)", len(s), maxName)
	}
	parts := strings.SplitN(s, "/", 9)
	if len(parts) < 8 || parts[0] != "projects" || parts[2] != "locations" || parts[4] != "keyRings" || parts[6] != "cryptoKeys" {
		return bad()
	}
	k := keyName{project: parts[1], location: parts[3], keyRing: parts[5], key: parts[7]}
	if !projectRE.MatchString(k.project) || !locationRE.MatchString(k.location) ||
		!kmsIDRE.MatchString(k.keyRing) || !kmsIDRE.MatchString(k.key) {
		return bad()
	}
	return k, strings.TrimPrefix(s, k.String()), nil
}
