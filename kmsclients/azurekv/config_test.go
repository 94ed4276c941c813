package azurekv

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

const (
	testTenant = "00000000-0000-0000-0000-000000000001"
	testClient = "00000000-0000-0000-0000-000000000002"
)

func TestValidate(t *testing.T) {
	good := testConfig("trousseau")
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" = valid
	}{
		{"default config", func(*Config) {}, ""},
		{"managed HSM", func(c *Config) { c.VaultURL = "https://myhsm.managedhsm.azure.net" }, ""},
		{"every option", func(c *Config) {
			c.KeyVersion, c.Algorithm, c.Cloud = "0123456789abcdef0123456789abcdef", "A256KW", "AzureChina"
		}, ""},
		{"no vault URL", func(c *Config) { c.VaultURL = "" }, "azurekv.vaultURL: required"},
		{"http vault URL", func(c *Config) { c.VaultURL = "http://myvault.vault.azure.net/" }, "azurekv.vaultURL: "},
		{"vault URL with path", func(c *Config) { c.VaultURL = "https://myvault.vault.azure.net/keys/x" }, "azurekv.vaultURL: "},
		{"vault URL with query", func(c *Config) { c.VaultURL = "https://myvault.vault.azure.net/?a=b" }, "azurekv.vaultURL: "},
		{"no key name", func(c *Config) { c.KeyName = "" }, "azurekv.keyName: required"},
		{"bad key name", func(c *Config) { c.KeyName = "a/b" }, "azurekv.keyName: "},
		{"bad key version", func(c *Config) { c.KeyVersion = "../x" }, "azurekv.keyVersion: "},
		{"RSA1_5", func(c *Config) { c.Algorithm = "RSA1_5" }, "azurekv.algorithm: "},
		{"unknown cloud", func(c *Config) { c.Cloud = "AzureGermany" }, "azurekv.cloud: "},
		{"no credential", func(c *Config) { c.Credential = Credential{} }, "azurekv.credential: exactly one of"},
		{"two credentials", func(c *Config) { c.Credential.ManagedIdentity = &ManagedIdentity{} }, "default and managedIdentity are set"},
		{"workload identity incomplete", func(c *Config) {
			c.Credential = Credential{WorkloadIdentity: &WorkloadIdentity{ClientID: testClient}}
		}, "azurekv.credential.workloadIdentity.tenantID: required"},
		{"client secret incomplete", func(c *Config) {
			c.Credential = Credential{ClientSecret: &ClientSecret{TenantID: testTenant, ClientID: testClient}}
		}, "azurekv.credential.clientSecret.secretFile: required"},
		{"client certificate incomplete", func(c *Config) {
			c.Credential = Credential{ClientCertificate: &ClientCertificate{CertFile: "/x"}}
		}, "azurekv.credential.clientCertificate.tenantID: required"},
		{"azure.json without path", func(c *Config) { c.Credential = Credential{AzureJSON: &AzureJSON{}} }, "azurekv.credential.azureJSON.path: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestValidateReportsEveryFault(t *testing.T) {
	err := Config{}.Validate()
	for _, field := range []string{"azurekv.vaultURL", "azurekv.keyName", "azurekv.credential"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate of an empty config: %v, want %s named", err, field)
		}
	}
}

// The YAML the lead's loader accepts is turned into JSON first; check the
// field names and that `default: {}` counts as set.
func TestConfigJSON(t *testing.T) {
	const doc = `{"vaultURL": "https://v.vault.azure.net/", "keyName": "k", "keyVersion": "",
		"algorithm": "RSA-OAEP-256", "cloud": "AzureUSGovernment", "credential": {"default": {}}}`
	var c Config
	if err := json.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.VaultURL == "" || c.KeyName != "k" || c.Cloud != "AzureUSGovernment" || c.Credential.Default == nil {
		t.Fatalf("decoded %+v", c)
	}
}

func writeFile(t testing.TB, name, content string) string {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// certPEM returns a self-signed certificate and its RSA key (Entra ID
// wants RSA), in one PEM file.
func certPEM(t testing.TB) string {
	key := testRSAKey(t, 2048)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "trousseau-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

func TestCredentialsFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cred Credential
		want azcore.TokenCredential // type only
	}{
		{"default", Credential{Default: &DefaultCredential{}}, &azidentity.DefaultAzureCredential{}},
		{"workload identity", Credential{WorkloadIdentity: &WorkloadIdentity{
			ClientID: testClient, TenantID: testTenant, TokenFile: writeFile(t, "token", "eyJhbGciOi.x.y\n"),
		}}, &azidentity.WorkloadIdentityCredential{}},
		{"system-assigned managed identity", Credential{ManagedIdentity: &ManagedIdentity{}}, &azidentity.ManagedIdentityCredential{}},
		{"user-assigned managed identity", Credential{ManagedIdentity: &ManagedIdentity{ClientID: testClient}}, &azidentity.ManagedIdentityCredential{}},
		{"client secret", Credential{ClientSecret: &ClientSecret{
			TenantID: testTenant, ClientID: testClient, SecretFile: writeFile(t, "secret", "s3cret\n"),
		}}, &azidentity.ClientSecretCredential{}},
		{"client certificate", Credential{ClientCertificate: &ClientCertificate{
			TenantID: testTenant, ClientID: testClient, CertFile: writeFile(t, "cert.pem", certPEM(t)),
		}}, &azidentity.ClientCertificateCredential{}},
		{"azure.json with managed identity", Credential{AzureJSON: &AzureJSON{Path: writeFile(t, "azure.json", `{
			"cloud": "AzurePublicCloud", "tenantId": "`+testTenant+`", "aadClientId": "msi", "aadClientSecret": "msi",
			"useManagedIdentityExtension": true, "userAssignedIdentityID": "`+testClient+`"}`)}}, &azidentity.ManagedIdentityCredential{}},
		{"azure.json with a service principal", Credential{AzureJSON: &AzureJSON{Path: writeFile(t, "azure.json", `{
			"tenantId": "`+testTenant+`", "aadClientId": "`+testClient+`", "aadClientSecret": "s3cret",
			"useManagedIdentityExtension": false}`)}}, &azidentity.ClientSecretCredential{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("trousseau")
			cfg.Credential = tc.cred
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			cred, err := newCredential(cfg.Credential, azcore.ClientOptions{})
			if err != nil {
				t.Fatalf("newCredential: %v", err)
			}
			if got, want := fmt.Sprintf("%T", cred), fmt.Sprintf("%T", tc.want); got != want {
				t.Fatalf("got a %s, want a %s", got, want)
			}
			if _, err := New(context.Background(), "azure-test", cfg); err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestBadCredentials(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	empty := writeFile(t, "empty", "\n")
	for _, tc := range []struct {
		name string
		cred Credential
		want string
	}{
		{"secret file missing", Credential{ClientSecret: &ClientSecret{TenantID: testTenant, ClientID: testClient, SecretFile: missing}},
			"azurekv.credential.clientSecret.secretFile: "},
		{"secret file empty", Credential{ClientSecret: &ClientSecret{TenantID: testTenant, ClientID: testClient, SecretFile: empty}},
			"azurekv.credential.clientSecret.secretFile: " + empty + " is empty"},
		{"token file missing", Credential{WorkloadIdentity: &WorkloadIdentity{ClientID: testClient, TenantID: testTenant, TokenFile: missing}},
			"azurekv.credential.workloadIdentity.tokenFile: "},
		{"certificate file missing", Credential{ClientCertificate: &ClientCertificate{TenantID: testTenant, ClientID: testClient, CertFile: missing}},
			"azurekv.credential.clientCertificate.certFile: "},
		{"certificate file not a certificate", Credential{ClientCertificate: &ClientCertificate{TenantID: testTenant, ClientID: testClient, CertFile: writeFile(t, "c", "hello")}},
			"azurekv.credential.clientCertificate.certFile: "},
		{"azure.json missing", Credential{AzureJSON: &AzureJSON{Path: missing}}, "azurekv.credential.azureJSON.path: "},
		{"azure.json not JSON", Credential{AzureJSON: &AzureJSON{Path: writeFile(t, "a.json", "tenantId: x")}}, "is not valid JSON"},
		{"azure.json without a credential", Credential{AzureJSON: &AzureJSON{Path: writeFile(t, "a.json", `{"tenantId": "x"}`)}},
			"sets neither useManagedIdentityExtension nor aadClientId"},
		{"azure.json with a certificate", Credential{AzureJSON: &AzureJSON{Path: writeFile(t, "a.json", `{"tenantId": "x", "aadClientId": "y", "aadClientCertPath": "/c.pfx"}`)}},
			"aadClientCertPath"},
		{"no credential", Credential{}, "azurekv.credential: exactly one of"},
		{"two credentials", Credential{Default: &DefaultCredential{}, AzureJSON: &AzureJSON{Path: "/etc/kubernetes/azure.json"}}, "default and azureJSON are set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("trousseau")
			cfg.Credential = tc.cred
			_, err := New(context.Background(), "azure-test", cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(tc.name, "missing") && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("New: %v does not wrap fs.ErrNotExist", err)
			}
		})
	}
}

func TestSecretsStayOutOfErrors(t *testing.T) {
	path := writeFile(t, "azure.json", `{"aadClientId": "y", "aadClientSecret": "TOPSECRET"}`)
	cfg := testConfig("trousseau")
	cfg.Credential = Credential{AzureJSON: &AzureJSON{Path: path}}
	_, err := New(context.Background(), "azure-test", cfg)
	if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("New: %v", err)
	}
}
