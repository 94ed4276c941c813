package gcpkms

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"key", Config{KeyName: testKey}, ""},
		{"project number", Config{KeyName: "projects/123456789012/locations/global/keyRings/r/cryptoKeys/k"}, ""},
		{"domain-scoped project", Config{KeyName: "projects/example.com:my-project/locations/us/keyRings/R_1/cryptoKeys/K-1"}, ""},
		{"everything", Config{KeyName: testKey, Endpoint: "cloudkms.europe-west1.rep.googleapis.com:443",
			CredentialsFile: "/etc/trousseau/gcp.json", ImpersonateServiceAccount: "trousseau@my-project.iam.gserviceaccount.com",
			Timeout: Duration{Duration: 5 * time.Second}}, ""},
		{"loopback endpoint", Config{KeyName: testKey, Endpoint: "127.0.0.1:9010"}, ""},
		{"loopback IPv6 endpoint", Config{KeyName: testKey, Endpoint: "[::1]:9010"}, ""},
		{"localhost endpoint is TLS", Config{KeyName: testKey, Endpoint: "localhost:9010", CredentialsFile: "/x.json"}, ""},

		{"missing keyName", Config{}, "gcpkms.keyName: required"},
		{"pinned version", Config{KeyName: testKey + "/cryptoKeyVersions/3"}, "gcpkms.keyName: \"" + testKey + "/cryptoKeyVersions/3\" pins key version 3"},
		{"key ring only", Config{KeyName: "projects/p-123456/locations/global/keyRings/r"}, "gcpkms.keyName:"},
		{"trailing slash", Config{KeyName: testKey + "/"}, "gcpkms.keyName:"},
		{"bad key id", Config{KeyName: "projects/p-123456/locations/global/keyRings/r/cryptoKeys/a.b"}, "gcpkms.keyName:"},
		{"upper-case project", Config{KeyName: "projects/My-Project/locations/global/keyRings/r/cryptoKeys/k"}, "gcpkms.keyName:"},
		{"URL", Config{KeyName: "https://cloudkms.googleapis.com/v1/" + testKey}, "gcpkms.keyName:"},
		{"endpoint with scheme", Config{KeyName: testKey, Endpoint: "https://cloudkms.googleapis.com"}, "gcpkms.endpoint: \"https://cloudkms.googleapis.com\": want host:port"},
		{"endpoint without port", Config{KeyName: testKey, Endpoint: "cloudkms.googleapis.com"}, "gcpkms.endpoint:"},
		{"endpoint bad port", Config{KeyName: testKey, Endpoint: "cloudkms.googleapis.com:0"}, "gcpkms.endpoint:"},
		{"endpoint bad host", Config{KeyName: testKey, Endpoint: "cloud kms:443"}, "gcpkms.endpoint:"},
		{"credentials on loopback", Config{KeyName: testKey, Endpoint: "127.0.0.1:9010", CredentialsFile: "/x.json"}, "gcpkms.credentialsFile: not used with the loopback endpoint"},
		{"impersonation on loopback", Config{KeyName: testKey, Endpoint: "127.0.0.1:9010", ImpersonateServiceAccount: "a@b.iam.gserviceaccount.com"}, "gcpkms.impersonateServiceAccount: not used"},
		{"credentials file with spaces", Config{KeyName: testKey, CredentialsFile: " /x.json"}, "gcpkms.credentialsFile:"},
		{"service account not an email", Config{KeyName: testKey, ImpersonateServiceAccount: "trousseau"}, "gcpkms.impersonateServiceAccount:"},
		{"service account resource name", Config{KeyName: testKey, ImpersonateServiceAccount: "projects/-/serviceAccounts/a@b.iam.gserviceaccount.com"}, "gcpkms.impersonateServiceAccount:"},
		{"negative timeout", Config{KeyName: testKey, Timeout: Duration{Duration: -time.Second}}, "gcpkms.timeout:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kmstest.WantError(t, "Validate", tc.cfg.Validate(), tc.wantErr)
		})
	}
}

func TestConfigFromYAML(t *testing.T) {
	var c Config
	doc := "keyName: " + testKey + "\nendpoint: 127.0.0.1:9010\ntimeout: 1500ms\n"
	if err := yaml.UnmarshalStrict([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.KeyName != testKey || c.Timeout.Duration != 1500*time.Millisecond || c.Validate() != nil {
		t.Fatalf("decoded %+v", c)
	}
	out, err := yaml.Marshal(Config{KeyName: testKey})
	if err != nil || strings.Contains(string(out), "timeout") {
		t.Fatalf("an unset timeout is written out: %s (%v)", out, err)
	}
	if err := yaml.UnmarshalStrict([]byte("keyName: x\ntimeout: 5\n"), &c); err == nil {
		t.Fatal("a bare number was read as a timeout")
	}
}

// FuzzParseVersionName: a key identity comes from etcd. Whatever it
// holds, the parser neither panics nor accepts a name that does not
// spell back exactly.
func FuzzParseVersionName(f *testing.F) {
	f.Add(testKey + "/cryptoKeyVersions/1")
	f.Add("projects/123/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/18446744073709551615")
	f.Add(testKey)
	f.Add("projects//locations//keyRings//cryptoKeys//cryptoKeyVersions/")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, v, err := parseVersionName(s)
		if err != nil {
			return
		}
		if got := k.String() + "/cryptoKeyVersions/" + v; got != s {
			t.Fatalf("parsed %q as %q", s, got)
		}
		if _, err := parseKeyName(k.String()); err != nil {
			t.Fatalf("the key of %q does not parse: %v", s, err)
		}
	})
}
