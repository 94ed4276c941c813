package vault

import (
	"context"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{
		Address: "https://vault.example.com:8200",
		KeyName: "trousseau",
		Auth:    Auth{Kubernetes: &KubernetesAuth{Role: "trousseau"}},
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Config)
		want string // "" for valid; else a substring of the error
	}{
		"minimal": {func(*Config) {}, ""},
		"every field": {func(c *Config) {
			c.TransitMount, c.Namespace, c.CAFile, c.TLSServerName = "kms/transit", "team-a/", "/ca.pem", "vault.internal"
		}, ""},
		"loopback http":     {func(c *Config) { c.Address = "http://127.0.0.1:8200" }, ""},
		"trailing slash":    {func(c *Config) { c.Address = "https://vault.example.com/" }, ""},
		"token file":        {func(c *Config) { c.Auth = Auth{TokenFile: "/run/vault/token"} }, ""},
		"approle":           {func(c *Config) { c.Auth = Auth{AppRole: &AppRoleAuth{RoleID: "r", SecretIDFile: "/s"}} }, ""},
		"cert":              {func(c *Config) { c.Auth = Auth{Cert: &CertAuth{CertFile: "/c", KeyFile: "/k", Mount: "tls"}} }, ""},
		"no address":        {func(c *Config) { c.Address = "" }, "vault.address: required"},
		"remote http":       {func(c *Config) { c.Address = "http://vault.example.com" }, "vault.address: "},
		"address with path": {func(c *Config) { c.Address = "https://vault.example.com/v1" }, "vault.address: "},
		"address with user": {func(c *Config) { c.Address = "https://u:p@vault.example.com" }, "vault.address: "},
		"relative address":  {func(c *Config) { c.Address = "vault.example.com:8200" }, "vault.address: "},
		"no key":            {func(c *Config) { c.KeyName = "" }, "vault.keyName: required"},
		"key with slash":    {func(c *Config) { c.KeyName = "a/b" }, "vault.keyName: "},
		"mount escaping":    {func(c *Config) { c.TransitMount = "transit/../sys" }, "vault.transitMount: "},
		"bad namespace":     {func(c *Config) { c.Namespace = "a//b" }, "vault.namespace: "},
		"bad server name":   {func(c *Config) { c.TLSServerName = "vault example" }, "vault.tlsServerName: "},
		"ca with http":      {func(c *Config) { c.Address, c.CAFile = "http://localhost:8200", "/ca.pem" }, "vault.caFile: "},
		"cert with http": {func(c *Config) {
			c.Address, c.Auth = "http://localhost:8200", Auth{Cert: &CertAuth{CertFile: "/c", KeyFile: "/k"}}
		}, "vault.auth.cert: "},
		"no auth":              {func(c *Config) { c.Auth = Auth{} }, "vault.auth: exactly one of tokenFile, appRole, kubernetes or cert is required; got none"},
		"two auths":            {func(c *Config) { c.Auth.TokenFile = "/t" }, "vault.auth: exactly one of tokenFile, appRole, kubernetes or cert is required; got kubernetes and tokenFile"},
		"approle without role": {func(c *Config) { c.Auth = Auth{AppRole: &AppRoleAuth{SecretIDFile: "/s"}} }, "vault.auth.appRole.roleID: required"},
		"approle without file": {func(c *Config) { c.Auth = Auth{AppRole: &AppRoleAuth{RoleID: "r"}} }, "vault.auth.appRole.secretIDFile: required"},
		"approle bad mount":    {func(c *Config) { c.Auth = Auth{AppRole: &AppRoleAuth{RoleID: "r", SecretIDFile: "/s", Mount: "/x"}} }, "vault.auth.appRole.mount: "},
		"kubernetes no role":   {func(c *Config) { c.Auth.Kubernetes.Role = "" }, "vault.auth.kubernetes.role: required"},
		"cert without key":     {func(c *Config) { c.Auth = Auth{Cert: &CertAuth{CertFile: "/c"}} }, "vault.auth.cert.keyFile: required"},
		"identity too long":    {func(c *Config) { c.KeyName = strings.Repeat("k", 500) }, "limit 512"},
	} {
		t.Run(name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := validConfig()
	c.Namespace = "/team-a/"
	d := c.withDefaults()
	if d.TransitMount != "transit" || d.Auth.Kubernetes.Mount != "kubernetes" || d.Auth.Kubernetes.JWTFile != DefaultJWTFile || d.Namespace != "team-a" {
		t.Fatalf("defaults: %+v %+v", d, *d.Auth.Kubernetes)
	}
	if c.Auth.Kubernetes.Mount != "" {
		t.Fatal("withDefaults changed the caller's auth block")
	}
	if got, want := identityPrefix(d), "vault:https://vault.example.com:8200/team-a/transit/trousseau:v"; got != want {
		t.Fatalf("identity prefix %q, want %q", got, want)
	}
}

func TestNew(t *testing.T) {
	t.Run("bad name", func(t *testing.T) {
		if _, err := New(context.Background(), "Vault EU", validConfig()); err == nil {
			t.Fatal("New accepted an invalid backend name")
		}
	})
	t.Run("invalid config names the backend and field", func(t *testing.T) {
		c := validConfig()
		c.KeyName = ""
		_, err := New(context.Background(), "vault-eu", c)
		if err == nil || !strings.HasPrefix(err.Error(), "vault vault-eu: vault.keyName: ") {
			t.Fatalf("New = %v", err)
		}
	})
	t.Run("missing CA file", func(t *testing.T) {
		c := validConfig()
		c.CAFile = "/nonexistent/ca.pem"
		if _, err := New(context.Background(), "vault-eu", c); err == nil || !strings.Contains(err.Error(), "vault.caFile") {
			t.Fatalf("New = %v, want a vault.caFile error", err)
		}
	})
	t.Run("no call to Vault", func(t *testing.T) {
		c := validConfig()
		c.Address = "https://192.0.2.1:8200" // TEST-NET-1: never answers
		b, err := New(context.Background(), "vault-eu", c)
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
	})
}
