package azurekv

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// Config is the YAML block `azurekv: {...}` of a backend.
type Config struct {
	// VaultURL is the vault (https://NAME.vault.azure.net/) or Managed HSM
	// (https://NAME.managedhsm.azure.net/) that holds the key.
	VaultURL string `json:"vaultURL"`
	// KeyName names the key in the vault.
	KeyName string `json:"keyName"`
	// KeyVersion pins one version of the key. Empty follows the latest
	// version, so that a rotation in Key Vault is noticed by Probe.
	KeyVersion string `json:"keyVersion"`
	// Algorithm is the wrap algorithm; empty means RSA-OAEP-256.
	Algorithm string `json:"algorithm"`
	// Cloud is AzurePublic (the default), AzureChina or AzureUSGovernment.
	Cloud string `json:"cloud"`
	// Credential says how to sign in to Microsoft Entra ID.
	Credential Credential `json:"credential"`
}

// algorithm is a wrap algorithm the backend accepts. The id is written
// into every wrapped share so that Unwrap uses the algorithm the share was
// wrapped with even after the configuration changed: ids are part of the
// stored format and must never be renumbered or reused.
type algorithm struct {
	id   byte
	name azkeys.EncryptionAlgorithm
	rsa  bool // true: needs an RSA key; false: an AES (oct) key
}

// RSA1_5 is left out on purpose: PKCS#1 v1.5 decryption is a padding
// oracle, and the plugin unwraps whatever bytes it is handed.
var algorithms = []algorithm{
	{1, azkeys.EncryptionAlgorithmRSAOAEP256, true},
	{2, azkeys.EncryptionAlgorithmRSAOAEP, true},
	{3, azkeys.EncryptionAlgorithmA256KW, false},
	{4, azkeys.EncryptionAlgorithmA192KW, false},
	{5, azkeys.EncryptionAlgorithmA128KW, false},
	{6, azkeys.EncryptionAlgorithmCKMAESKEYWRAPPAD, false},
}

const defaultAlgorithm = azkeys.EncryptionAlgorithmRSAOAEP256

func algorithmNamed(name string) (algorithm, bool) {
	if name == "" {
		name = string(defaultAlgorithm)
	}
	for _, a := range algorithms {
		if string(a.name) == name {
			return a, true
		}
	}
	return algorithm{}, false
}

func algorithmByID(id byte) (algorithm, bool) {
	for _, a := range algorithms {
		if a.id == id {
			return a, true
		}
	}
	return algorithm{}, false
}

func algorithmNames() string {
	names := make([]string, len(algorithms))
	for i, a := range algorithms {
		names[i] = string(a.name)
	}
	return strings.Join(names, ", ")
}

// clouds maps the config's cloud names to the SDK's; the authority host
// of each cloud is where the credentials sign in.
var clouds = map[string]cloud.Configuration{
	"":                  cloud.AzurePublic,
	"AzurePublic":       cloud.AzurePublic,
	"AzureChina":        cloud.AzureChina,
	"AzureUSGovernment": cloud.AzureGovernment,
}

var (
	// Key Vault object names: 1 to 127 letters, digits and dashes.
	keyNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	// Versions are 32 hex digits today; accept any short alphanumeric
	// string so that a new format does not break us, while keeping path
	// separators and escapes out of the URL.
	keyVersionRE = regexp.MustCompile(`^[0-9A-Za-z]{1,64}$`)
)

// Validate names the field at fault. It reports every fault it finds.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkVaultURL(c.VaultURL); err != nil {
		add("azurekv.vaultURL: %v", err)
	}
	switch {
	case c.KeyName == "":
		add("azurekv.keyName: required")
	case !keyNameRE.MatchString(c.KeyName):
		add("azurekv.keyName: %q: want 1 to 127 letters, digits or dashes", c.KeyName)
	}
	if c.KeyVersion != "" && !keyVersionRE.MatchString(c.KeyVersion) {
		add("azurekv.keyVersion: %q: want the version part of the key's ID (32 hex digits), or empty to follow the latest version", c.KeyVersion)
	}
	if _, ok := algorithmNamed(c.Algorithm); !ok {
		add("azurekv.algorithm: %q is not supported; want one of %s", c.Algorithm, algorithmNames())
	}
	if _, ok := clouds[c.Cloud]; !ok {
		add("azurekv.cloud: %q: want AzurePublic, AzureChina or AzureUSGovernment", c.Cloud)
	}
	if err := c.Credential.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkVaultURL accepts https://host[:port][/] and nothing more: the SDK
// appends /keys/... to it, and Unwrap compares key IDs against its host.
func checkVaultURL(s string) error {
	if s == "" {
		return errors.New("required (e.g. https://myvault.vault.azure.net/)")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("%q: want an https URL", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q: no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return fmt.Errorf("%q: want only https://host/, without path, query or user", s)
	}
	return nil
}

// baseURL is the vault URL in the form the key IDs use.
func (c Config) baseURL() string {
	u, _ := url.Parse(c.VaultURL) // Validate accepted it
	return "https://" + strings.ToLower(u.Host)
}
