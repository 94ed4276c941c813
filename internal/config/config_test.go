package config

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/awskms"
	"github.com/trousseau-io/trousseau/kmsclients/azurekv"
	"github.com/trousseau-io/trousseau/kmsclients/local"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

func keyFiles(t *testing.T, n int) []string {
	dir := t.TempDir()
	var out []string
	for i := range n {
		p := filepath.Join(dir, string(rune('a'+i))+".key")
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func validYAML(t *testing.T) string {
	k := keyFiles(t, 3)
	return `
socket: /var/run/trousseau/kms.sock
stateDir: /var/lib/trousseau
threshold: 2
backends:
  - name: local-a
    local: {keyFile: ` + k[0] + `}
  - name: local-b
    local: {keyFile: ` + k[1] + `}
  - name: local-c
    local: {keyFile: ` + k[2] + `}
health: {listen: 127.0.0.1:8787, probeInterval: 30s}
rotation: {maxAge: 720h}
log: {level: info, format: json}
`
}

func TestParseTheDocumentedShape(t *testing.T) {
	c, err := Parse([]byte(validYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Threshold != 2 || len(c.Backends) != 3 || c.Health.ProbeInterval.Duration != 30*time.Second || c.MaxAge() != 720*time.Hour {
		t.Fatalf("parsed %+v", c)
	}
	if c.Health.ProbeTimeout.Duration != DefaultProbeTimeout || c.SocketPermissions.Mode != "0600" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	bs, err := c.BuildBackends(context.Background())
	if err != nil || len(bs) != 3 || bs[1].Name() != "local-b" {
		t.Fatalf("BuildBackends: %v", err)
	}
	// What Marshal writes parses back to the same config.
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse of marshalled config: %v\n%s", err, out)
	}
	if again.Threshold != c.Threshold || keyFileOf(again.Backends[2]) != keyFileOf(c.Backends[2]) || again.MaxAge() != c.MaxAge() {
		t.Fatal("marshal/parse changed the config")
	}
}

func TestRotationMaxAgeZeroTurnsItOff(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(validYAML(t), "maxAge: 720h", "maxAge: 0s", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxAge() != 0 {
		t.Fatalf("maxAge %s", c.MaxAge())
	}
}

// Each bad config is rejected with a message naming the field.
func TestRejectsWithFieldName(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"typo in a field", "threshold: 2", "thresold: 2", `unknown field "thresold"`},
		{"typo in a nested field", "probeInterval: 30s", "probeIntervall: 30s", `unknown field "health.probeIntervall"`},
		{"typo in a backend", "local: {keyFile", "locall: {keyFile", `unknown field "backends[0].locall"`},
		{"k above n", "threshold: 2", "threshold: 4", "threshold: threshold 4 is larger than the number of backends 3"},
		{"k zero", "threshold: 2", "threshold: 0", "threshold:"},
		{"floor above k", "threshold: 2", "threshold: 2\nminThreshold: 3", "minThreshold: must be 1 to threshold (2), got 3"},
		{"floor negative", "threshold: 2", "threshold: 2\nminThreshold: -1", "minThreshold"},
		{"duplicate name", "name: local-b", "name: local-a", "backends[1].name"},
		{"bad name", "name: local-b", "name: Local_B", "backends[1].name"},
		{"no kind", "    local: {keyFile: ", "    #", "backends[0]: set exactly one backend kind"},
		{"empty key file", "local: {keyFile: ", "local: {keyFile: \"\"} #", "backends[0]: local.keyFile: required"},
		{"bad duration", "probeInterval: 30s", "probeInterval: soon", "probeInterval"},
		{"tiny interval", "probeInterval: 30s", "probeInterval: 10ms", "health.probeInterval"},
		{"bad level", "level: info", "level: chatty", "log.level"},
		{"tiny maxAge", "maxAge: 720h", "maxAge: 1ns", "rotation.maxAge"},
		{"one key file twice", "  - name: local-c\n    local: {keyFile: ", "  - name: local-c\n    local: {keyFile: /dup}\n  - name: local-d\n    local: {keyFile: /dup}\n  #", "backends[3].local.keyFile: /dup is already the key of backends[2]"},
		{"negative maxAge", "maxAge: 720h", "maxAge: -1h", "rotation.maxAge"},
		{"bad format", "format: json", "format: xml", "log.format"},
		{"relative socket", "socket: /var/run/trousseau/kms.sock", "socket: kms.sock", "socket: must be an absolute path"},
		{"world socket", "stateDir:", "socketPermissions: {mode: \"0666\"}\nstateDir:", "socketPermissions.mode"},
		{"duplicate key", "threshold: 2", "threshold: 2\nthreshold: 3", "threshold"},
		{"two kinds", "    local: {keyFile: ", "    awskms: {keyID: alias/x}\n    local: {keyFile: ", "backends[0]: set exactly one backend kind, got awskms and local"},
		{"bad aws key", "    local: {keyFile: ", "    awskms: {keyID: \"\"}\n    #", "backends[0]: awskms.keyID"},
		{"bad azure", "    local: {keyFile: ", "    azurekv: {keyName: k}\n    #", "backends[0]: azurekv.vaultURL"},
		{"aws typo", "    local: {keyFile: ", "    awskms: {keyId: x}\n    #", `unknown field "backends[0].awskms.keyId"`},
		{"vault two auths", "    local: {keyFile: ", "    vault: {address: http://127.0.0.1:8200, keyName: k, auth: {tokenFile: /t, appRole: {roleID: r, secretIDFile: /s}}}\n    #", "backends[0]: vault.auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := validYAML(t)
			if !strings.Contains(y, tc.from) {
				t.Fatalf("test setup: %q not in config", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(y, tc.from, tc.to, 1)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestUnusableKeyFileAtStartIsADownBackend: a key file that is
// there but unusable is a backend that is down, not a config that is
// wrong: every backend is built, and the bad one says why from Probe.
func TestUnusableKeyFileAtStartIsADownBackend(t *testing.T) {
	for _, tc := range testutil.SpoiledKeyFiles {
		t.Run(tc.Name, func(t *testing.T) {
			c, err := Parse([]byte(validYAML(t)))
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.Spoil(keyFileOf(c.Backends[1])); err != nil {
				t.Fatal(err)
			}
			bs, err := c.BuildBackends(context.Background())
			if err != nil || len(bs) != 3 {
				t.Fatalf("BuildBackends: %v", err)
			}
			defer kmsclients.CloseAll(bs)
			if _, err := bs[1].Probe(context.Background()); err == nil || !strings.Contains(err.Error(), tc.Want) {
				t.Errorf("probe of local-b: %v, want %q", err, tc.Want)
			}
			if _, err := bs[0].Probe(context.Background()); err != nil {
				t.Errorf("probe of local-a: %v", err)
			}
		})
	}
}

// TestValidateRefusesWhatServeCannotUse: one key file under two
// names, a health.listen that is not host:port.
func TestValidateRefusesWhatServeCannotUse(t *testing.T) {
	for _, tc := range []struct {
		name string
		// keyFile returns backends[2]'s key file, given backends[0]'s.
		keyFile func(t *testing.T, a string) string
		listen  string
		want    string
	}{
		{name: "symlink to another backend's key file", keyFile: func(t *testing.T, a string) string {
			p := filepath.Join(t.TempDir(), "link.key")
			mustDo(t, os.Symlink(a, p))
			return p
		}, want: "backends[2].local.keyFile: "},
		{name: "dot-dot path to another backend's key file", keyFile: func(t *testing.T, a string) string {
			mustDo(t, os.Mkdir(filepath.Join(filepath.Dir(a), "sub"), 0o700))
			return filepath.Join(filepath.Dir(a), "sub", "..", filepath.Base(a))
		}, want: "is already the key of backends[0]"},
		{name: "dot-dot path to a missing file", keyFile: func(t *testing.T, a string) string {
			return filepath.Join(filepath.Dir(a), "gone", "..", filepath.Base(a))
		}, want: "is already the key of backends[0]"},
		{name: "hard link to another backend's key file", keyFile: func(t *testing.T, a string) string {
			p := filepath.Join(t.TempDir(), "hard.key")
			mustDo(t, os.Link(a, p))
			return p
		}, want: "is already the key of backends[0]"},
		{name: "health listen without a port", listen: "127.0.0.1", want: "health.listen: want host:port"},
		{name: "health listen with a port name", listen: "127.0.0.1:http", want: "health.listen: "},
		{name: "health listen port out of range", listen: ":99999", want: `port "99999" is not a number from 0 to 65535`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := validYAML(t)
			c, err := Parse([]byte(y))
			if err != nil {
				t.Fatal(err)
			}
			if tc.keyFile != nil {
				y = strings.Replace(y, keyFileOf(c.Backends[2]), tc.keyFile(t, keyFileOf(c.Backends[0])), 1)
			}
			if tc.listen != "" {
				y = strings.Replace(y, "listen: 127.0.0.1:8787", "listen: \""+tc.listen+"\"", 1)
			}
			if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	for _, listen := range []string{"127.0.0.1:0", ":8787", "[::1]:8787", "localhost:8787"} {
		t.Run("health listen "+listen, func(t *testing.T) {
			if _, err := Parse([]byte(strings.Replace(validYAML(t), "listen: 127.0.0.1:8787", "listen: \""+listen+"\"", 1))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSocketGroupMustExistOnTheHost: a group name this machine
// does not know is refused by ValidateOnHost (serve, config check), not by
// Validate (recover reads the config on other machines).
func TestSocketGroupMustExistOnTheHost(t *testing.T) {
	for _, tc := range []struct{ name, group, want string }{
		{"unknown name", "no-such-group-trousseau", "socketPermissions.group: "},
		{"negative id", "-1", "socketPermissions.group: "},
		{"name of this machine", currentGroupName(t), ""},
		{"numeric id", "4242", ""},
		{"left out", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(validYAML(t), "stateDir:", "socketPermissions: {group: \""+tc.group+"\"}\nstateDir:", 1)
			c, err := Parse([]byte(y))
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			err = c.ValidateOnHost()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func currentGroupName(t *testing.T) string {
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skipf("this machine does not name its own group: %v", err)
	}
	return g.Name
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMessagesNameTheFieldAtFault: each of these used to blame the
// wrong field, or none.
func TestMessagesNameTheFieldAtFault(t *testing.T) {
	// 14 backends before the three of validYAML: 17 in all.
	seventeen := "backends:\n"
	for i := range 14 {
		seventeen += fmt.Sprintf("  - name: b%d\n    local: {keyFile: /k/%d}\n", i, i)
	}
	for _, tc := range []struct{ name, from, to, want, notWant string }{
		{"bare integer duration", "probeInterval: 30s", "probeInterval: 30", `health.probeInterval: want a duration with its unit such as "30s", got the bare number 30`, ""},
		{"bare integer maxAge", "maxAge: 720h", "maxAge: 3600", "rotation.maxAge: want a duration with its unit", ""},
		{"17 backends", "backends:\n", seventeen, "backends: at most 16 backends, got 17", "threshold"},
		{"socket over the unix limit", "socket: /var/run/trousseau/kms.sock", "socket: /" + strings.Repeat("s", MaxSocketPath), fmt.Sprintf("socket: /%s is 108 bytes long; a unix socket path holds at most 107", strings.Repeat("s", MaxSocketPath)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := validYAML(t)
			if !strings.Contains(y, tc.from) {
				t.Fatalf("test setup: %q not in config", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(y, tc.from, tc.to, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("%v blames %s", err, tc.notWant)
			}
		})
	}
	t.Run("socket at the unix limit", func(t *testing.T) {
		y := strings.Replace(validYAML(t), "socket: /var/run/trousseau/kms.sock", "socket: /"+strings.Repeat("s", MaxSocketPath-1), 1)
		if _, err := Parse([]byte(y)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("threshold: [\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("got %v", err)
	}
	if _, err := Load(p + ".missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestCloudBackendsParseAndBuild(t *testing.T) {
	k := keyFiles(t, 1)
	y := `
threshold: 2
backends:
  - name: aws-us
    awskms:
      keyID: arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
      encryptionContext: {cluster: prod}
  - name: azure-we
    azurekv:
      vaultURL: https://myvault.vault.azure.net/
      keyName: trousseau
      credential: {managedIdentity: {}}
  - name: break-glass
    local: {keyFile: ` + k[0] + `}
  - name: vault-eu
    vault:
      address: https://vault.example:8200
      keyName: trousseau
      auth: {tokenFile: ` + k[0] + `}
`
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backends[0].Spec.(*awskms.Config).EncryptionContext["cluster"] != "prod" || c.Backends[1].Spec.(*azurekv.Config).KeyName != "trousseau" {
		t.Fatalf("parsed %+v", c.Backends)
	}
	// Building makes no remote call: a backend may be down at start.
	bs, err := c.BuildBackends(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"aws-us", "azure-we", "break-glass", "vault-eu"} {
		if bs[i].Name() != want {
			t.Errorf("backend %d is %s", i, bs[i].Name())
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("threshold: 1\nbackends: [{name: a, local: {keyFile: /k}}]\n"))
	f.Add([]byte("backends: [{name: a, awskms: {keyID: alias/x}}]\nhealth: {probeInterval: 1s}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted a config that does not validate")
		}
	})
}

// The example configs shipped in testdata/ and deploy/ must stay valid.
func TestExampleConfigsAreValid(t *testing.T) {
	for _, p := range []string{repoRoot + "/testdata/config-example.yaml", repoRoot + "/deploy/config/trousseau.yaml"} {
		if _, err := Load(p); err != nil {
			t.Error(err)
		}
	}
}

func TestThresholdFloorDefaultsToThreshold(t *testing.T) {
	c, err := Parse([]byte(validYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	if c.ThresholdFloor() != c.Threshold {
		t.Fatalf("floor %d, threshold %d", c.ThresholdFloor(), c.Threshold)
	}
	c, err = Parse([]byte(strings.Replace(validYAML(t), "threshold: 2", "threshold: 2\nminThreshold: 1", 1)))
	if err != nil || c.ThresholdFloor() != 1 {
		t.Fatalf("minThreshold 1: %v, floor %d", err, c.ThresholdFloor())
	}
}

func TestUnsetProbeTimeoutFollowsAShortInterval(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(validYAML(t), "probeInterval: 30s", "probeInterval: 2s", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Health.ProbeTimeout.Duration > 2*time.Second {
		t.Fatalf("probeTimeout %s with probeInterval 2s", c.Health.ProbeTimeout.Duration)
	}
}

// inGroup decides whether a non-root plugin may give its socket to
// socketPermissions.group (only root may chown to a group it is not in).
func TestInGroup(t *testing.T) {
	if !inGroup(os.Getegid()) {
		t.Fatal("not in its own group")
	}
	groups, _ := os.Getgroups()
	outside := 54321
	for slices.Contains(groups, outside) || outside == os.Getegid() {
		outside++
	}
	if inGroup(outside) {
		t.Fatalf("in group %d, which it does not have", outside)
	}
}
