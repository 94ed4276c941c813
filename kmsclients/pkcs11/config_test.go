package pkcs11

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

const testModule = "/usr/lib/softhsm/libsofthsm2.so"

func validConfig() Config {
	return Config{Module: testModule, TokenLabel: "trousseau", PinFile: "/etc/trousseau/hsm.pin", KeyLabel: "share"}
}

func TestConfigValidate(t *testing.T) {
	slot := uint(0)
	with := func(f func(*Config)) Config {
		c := validConfig()
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"token by label", validConfig(), ""},
		{"token by slot 0", with(func(c *Config) { c.TokenLabel, c.Slot = "", &slot }), ""},
		{"everything", with(func(c *Config) {
			c.KeyID, c.Mechanism, c.Timeout = "0a1B", MechanismKWP, Duration{Duration: 5 * time.Second}
		}), ""},
		{"gcm by name", with(func(c *Config) { c.Mechanism = MechanismGCM }), ""},
		{"32-byte token label", with(func(c *Config) { c.TokenLabel = strings.Repeat("t", 32) }), ""},

		{"no module", with(func(c *Config) { c.Module = "" }), "pkcs11.module: required"},
		{"relative module", with(func(c *Config) { c.Module = "libsofthsm2.so" }), "pkcs11.module: \"libsofthsm2.so\" is not an absolute path"},
		{"no token", with(func(c *Config) { c.TokenLabel = "" }), "pkcs11.tokenLabel: required, or pkcs11.slot"},
		{"label and slot", with(func(c *Config) { c.Slot = &slot }), "pkcs11.slot: give the token by tokenLabel or by slot, not both"},
		{"long token label", with(func(c *Config) { c.TokenLabel = strings.Repeat("t", 33) }), "pkcs11.tokenLabel: 33 bytes"},
		{"token label with trailing space", with(func(c *Config) { c.TokenLabel = "hsm " }), "pkcs11.tokenLabel: \"hsm \" ends in spaces"},
		{"token label not UTF-8", with(func(c *Config) { c.TokenLabel = "\xff" }), "pkcs11.tokenLabel: not UTF-8"},
		{"no pin file", with(func(c *Config) { c.PinFile = "" }), "pkcs11.pinFile: required"},
		{"pin file with spaces", with(func(c *Config) { c.PinFile = "/x.pin " }), "pkcs11.pinFile:"},
		{"no key label", with(func(c *Config) { c.KeyLabel = "" }), "pkcs11.keyLabel: required"},
		{"long key label", with(func(c *Config) { c.KeyLabel = strings.Repeat("k", 65) }), "pkcs11.keyLabel: 65 bytes"},
		{"key ID not hex", with(func(c *Config) { c.KeyID = "0x01" }), "pkcs11.keyID: \"0x01\" is not hex"},
		{"key ID odd length", with(func(c *Config) { c.KeyID = "1" }), "pkcs11.keyID:"},
		{"long key ID", with(func(c *Config) { c.KeyID = strings.Repeat("ab", 33) }), "pkcs11.keyID: 33 bytes"},
		{"unknown mechanism", with(func(c *Config) { c.Mechanism = "rsa-oaep" }), "pkcs11.mechanism: \"rsa-oaep\": want aes-gcm (the default) or aes-key-wrap-pad"},
		{"negative timeout", with(func(c *Config) { c.Timeout = Duration{Duration: -time.Second} }), "pkcs11.timeout:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kmstest.WantError(t, "Validate", tc.cfg.Validate(), tc.wantErr)
		})
	}
}

func TestConfigFromYAML(t *testing.T) {
	var c Config
	doc := "module: " + testModule + "\nslot: 0\npinFile: /p\nkeyLabel: share\nkeyID: \"01\"\nmechanism: aes-key-wrap-pad\ntimeout: 1500ms\n"
	if err := yaml.UnmarshalStrict([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.Slot == nil || *c.Slot != 0 || c.KeyID != "01" || c.Timeout.Duration != 1500*time.Millisecond || c.Validate() != nil {
		t.Fatalf("decoded %+v", c)
	}
	out, err := yaml.Marshal(validConfig())
	if err != nil || strings.Contains(string(out), "timeout") || strings.Contains(string(out), "slot") {
		t.Fatalf("unset fields are written out: %s (%v)", out, err)
	}
	for _, bad := range []string{"slot: -1\n", "timeout: 5\n", "pin: 1234\n"} {
		if err := yaml.UnmarshalStrict([]byte("module: /m.so\nkeyLabel: k\npinFile: /p\n"+bad), &c); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
