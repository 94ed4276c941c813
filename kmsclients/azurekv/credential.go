package azurekv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Credential says how the plugin signs in to Microsoft Entra ID. Exactly
// one field is set. Secrets are only ever read from files.
type Credential struct {
	// Default is the SDK's DefaultAzureCredential chain, which reads the
	// AZURE_* environment variables itself. Write `default: {}`.
	Default *DefaultCredential `json:"default"`
	// WorkloadIdentity exchanges a projected service-account token.
	WorkloadIdentity *WorkloadIdentity `json:"workloadIdentity"`
	// ManagedIdentity asks the node's instance metadata service.
	ManagedIdentity *ManagedIdentity `json:"managedIdentity"`
	// ClientSecret signs in as a service principal with a secret.
	ClientSecret *ClientSecret `json:"clientSecret"`
	// ClientCertificate signs in as a service principal with a certificate.
	ClientCertificate *ClientCertificate `json:"clientCertificate"`
	// AzureJSON reuses the cloud provider's /etc/kubernetes/azure.json.
	AzureJSON *AzureJSON `json:"azureJSON"`
}

// DefaultCredential has no settings.
type DefaultCredential struct{}

// WorkloadIdentity is Microsoft Entra Workload ID.
type WorkloadIdentity struct {
	ClientID  string `json:"clientID"`
	TenantID  string `json:"tenantID"`
	TokenFile string `json:"tokenFile"`
}

// ManagedIdentity is a VM's managed identity. An empty ClientID selects
// the system-assigned identity.
type ManagedIdentity struct {
	ClientID string `json:"clientID"`
}

// ClientSecret is a service principal with a client secret in a file.
type ClientSecret struct {
	TenantID   string `json:"tenantID"`
	ClientID   string `json:"clientID"`
	SecretFile string `json:"secretFile"`
}

// ClientCertificate is a service principal with a certificate and its
// private key in one file (PEM, or PKCS#12 without password).
type ClientCertificate struct {
	TenantID string `json:"tenantID"`
	ClientID string `json:"clientID"`
	CertFile string `json:"certFile"`
}

// AzureJSON is the cloud-provider config file of AKS and aks-engine style
// clusters.
type AzureJSON struct {
	Path string `json:"path"`
}

const credentialKinds = "default, workloadIdentity, managedIdentity, clientSecret, clientCertificate, azureJSON"

// set lists the fields that are set, by their YAML names.
func (c Credential) set() []string {
	var names []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"default", c.Default != nil},
		{"workloadIdentity", c.WorkloadIdentity != nil},
		{"managedIdentity", c.ManagedIdentity != nil},
		{"clientSecret", c.ClientSecret != nil},
		{"clientCertificate", c.ClientCertificate != nil},
		{"azureJSON", c.AzureJSON != nil},
	} {
		if f.set {
			names = append(names, f.name)
		}
	}
	return names
}

func (c Credential) validate() error {
	switch set := c.set(); len(set) {
	case 0:
		return fmt.Errorf("azurekv.credential: exactly one of %s is required, none is set (write `default: {}`, not `default:`)", credentialKinds)
	case 1:
	default:
		return fmt.Errorf("azurekv.credential: exactly one of %s is allowed, %s are set", credentialKinds, strings.Join(set, " and "))
	}
	var missing []string
	need := func(field, value string) {
		if value == "" {
			missing = append(missing, "azurekv.credential."+field+": required")
		}
	}
	switch {
	case c.WorkloadIdentity != nil:
		// All three are required: the SDK would otherwise fall back to
		// environment variables, which the plugin does not use.
		need("workloadIdentity.clientID", c.WorkloadIdentity.ClientID)
		need("workloadIdentity.tenantID", c.WorkloadIdentity.TenantID)
		need("workloadIdentity.tokenFile", c.WorkloadIdentity.TokenFile)
	case c.ClientSecret != nil:
		need("clientSecret.tenantID", c.ClientSecret.TenantID)
		need("clientSecret.clientID", c.ClientSecret.ClientID)
		need("clientSecret.secretFile", c.ClientSecret.SecretFile)
	case c.ClientCertificate != nil:
		need("clientCertificate.tenantID", c.ClientCertificate.TenantID)
		need("clientCertificate.clientID", c.ClientCertificate.ClientID)
		need("clientCertificate.certFile", c.ClientCertificate.CertFile)
	case c.AzureJSON != nil:
		need("azureJSON.path", c.AzureJSON.Path)
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// newCredential builds the credential c selects; c has been validated.
// Files are read now, so that a missing or empty one is reported at start
// with the field that names it.
func newCredential(c Credential, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	switch {
	case c.Default != nil:
		return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts})
	case c.WorkloadIdentity != nil:
		return newWorkloadIdentity(*c.WorkloadIdentity, opts)
	case c.ManagedIdentity != nil:
		return newManagedIdentity(c.ManagedIdentity.ClientID, opts)
	case c.ClientSecret != nil:
		return newClientSecret(*c.ClientSecret, opts)
	case c.ClientCertificate != nil:
		return newClientCertificate(*c.ClientCertificate, opts)
	case c.AzureJSON != nil:
		return newFromAzureJSON(c.AzureJSON.Path, opts)
	}
	return nil, errors.New("azurekv.credential: none set")
}

func newWorkloadIdentity(w WorkloadIdentity, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	// The SDK reads the token file on every sign-in (the kubelet rotates
	// it); checking it now only gives a clear error at start.
	if _, err := readFile("workloadIdentity.tokenFile", w.TokenFile); err != nil {
		return nil, err
	}
	return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: opts,
		ClientID:      w.ClientID,
		TenantID:      w.TenantID,
		TokenFilePath: w.TokenFile,
	})
}

func newManagedIdentity(clientID string, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
	if clientID != "" {
		o.ID = azidentity.ClientID(clientID)
	}
	return azidentity.NewManagedIdentityCredential(o)
}

func newClientSecret(s ClientSecret, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	secret, err := readFile("clientSecret.secretFile", s.SecretFile)
	if err != nil {
		return nil, err
	}
	defer clear(secret)
	// Trimmed: editors and `kubectl create secret --from-file` leave a
	// trailing newline that is not part of the secret.
	cred, err := azidentity.NewClientSecretCredential(s.TenantID, s.ClientID, string(bytes.TrimSpace(secret)),
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("azurekv.credential.clientSecret: %w", err)
	}
	return cred, nil
}

func newClientCertificate(c ClientCertificate, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	data, err := readFile("clientCertificate.certFile", c.CertFile)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	certs, key, err := azidentity.ParseCertificates(data, nil)
	if err != nil {
		return nil, fmt.Errorf("azurekv.credential.clientCertificate.certFile: %s: %w (want a PEM file holding the certificate and its private key, or PKCS#12 without password)", c.CertFile, err)
	}
	cred, err := azidentity.NewClientCertificateCredential(c.TenantID, c.ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("azurekv.credential.clientCertificate: %w", err)
	}
	return cred, nil
}

// azureJSONFile holds the fields of azure.json this backend uses.
type azureJSONFile struct {
	TenantID                    string `json:"tenantId"`
	AADClientID                 string `json:"aadClientId"`
	AADClientSecret             string `json:"aadClientSecret"`
	UseManagedIdentityExtension bool   `json:"useManagedIdentityExtension"`
	UserAssignedIdentityID      string `json:"userAssignedIdentityID"`
	AADClientCertPath           string `json:"aadClientCertPath"`
}

// newFromAzureJSON follows the cloud provider's own precedence: a managed
// identity when useManagedIdentityExtension is set (AKS then writes "msi"
// as the client ID and secret), else the service principal's secret.
func newFromAzureJSON(path string, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	const field = "azurekv.credential.azureJSON.path"
	data, err := readFile("azureJSON.path", path)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	var f azureJSONFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %s is not valid JSON: %w", field, path, err)
	}
	switch {
	case f.UseManagedIdentityExtension:
		return newManagedIdentity(f.UserAssignedIdentityID, opts)
	case f.AADClientID != "" && f.AADClientSecret != "":
		if f.TenantID == "" {
			return nil, fmt.Errorf("%s: %s has aadClientId and aadClientSecret but no tenantId", field, path)
		}
		cred, err := azidentity.NewClientSecretCredential(f.TenantID, f.AADClientID, f.AADClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", field, path, err)
		}
		return cred, nil
	case f.AADClientCertPath != "":
		return nil, fmt.Errorf("%s: %s uses aadClientCertPath, which this backend does not read; use credential.clientCertificate", field, path)
	}
	return nil, fmt.Errorf("%s: %s sets neither useManagedIdentityExtension nor aadClientId and aadClientSecret", field, path)
}

// maxCredentialFile bounds what is read from a credential file: secrets,
// tokens and certificates are a few kilobytes.
const maxCredentialFile = 1 << 20

// readFile reads a credential file. The error names the config field and
// the path, never the content.
func readFile(field, path string) ([]byte, error) {
	field = "azurekv.credential." + field
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", field, err)
	case len(data) > maxCredentialFile:
		return nil, fmt.Errorf("%s: %s is larger than %d bytes", field, path, maxCredentialFile)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: %s is empty", field, path)
	}
	return data, nil
}
