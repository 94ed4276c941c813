package config

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shortDir is a temp dir with a short path: a unix socket path holds at
// most 107 bytes, and t.TempDir's can be longer.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cfg")
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// kmspluginYAML is a config whose socket is socket, with a key file as
// backends[0] and a kmsplugin backend on each endpoint after it.
func kmspluginYAML(t *testing.T, socket string, endpoints ...string) string {
	var b strings.Builder
	b.WriteString("socket: " + socket + "\nthreshold: 1\nbackends:\n")
	b.WriteString("  - name: break-glass\n    local: {keyFile: " + keyFiles(t, 1)[0] + "}\n")
	for i, ep := range endpoints {
		b.WriteString("  - name: plugin-" + string(rune('a'+i)) + "\n    kmsplugin: {endpoint: " + ep + "}\n")
	}
	return b.String()
}

// TestKmspluginEndpointRules: an endpoint that is Trousseau's own socket,
// or the socket of another kmsplugin backend, however it is named, is
// refused with the field at fault.
func TestKmspluginEndpointRules(t *testing.T) {
	dir := shortDir(t)
	socket := filepath.Join(dir, "kms.sock")
	aws := filepath.Join(dir, "aws.sock")
	link := func(name, target string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		mustDo(t, os.Symlink(target, p))
		return p
	}
	ownLink := link("own-link.sock", socket) // dangling: the socket is not made yet
	awsLink := link("aws-link.sock", aws)
	u := func(p string) string { return "unix://" + p }
	own := func(i int, ep string) string {
		return "backends[" + string(rune('0'+i)) + "].kmsplugin.endpoint: " + ep + " is Trousseau's own socket (socket: " + socket + "): the plugin cannot be a custodian of its own shares"
	}

	for _, tc := range []struct {
		name      string
		endpoints []string
		want      []string // nil: valid
	}{
		{"two sockets of their own", []string{u(aws), u(filepath.Join(dir, "gcp.sock"))}, nil},
		{"endpoint is the socket", []string{u(socket)}, []string{own(1, u(socket))}},
		{"endpoint is the socket through a symlink", []string{u(aws), u(ownLink)}, []string{own(2, u(ownLink))}},
		{"endpoint is the socket through a dot-dot path", []string{u(dir + "/x/../kms.sock")}, []string{own(1, u(dir+"/x/../kms.sock"))}},
		{"two backends on one endpoint", []string{u(aws), u(aws)}, []string{
			"backends[2].kmsplugin.endpoint: " + u(aws) + " is already the socket of backends[1]: one custodian would hold two shares",
		}},
		{"two backends on one endpoint through a symlink", []string{u(filepath.Join(dir, "gcp.sock")), u(aws), u(awsLink)}, []string{
			"backends[3].kmsplugin.endpoint: " + u(awsLink) + " is already the socket of backends[2] (" + u(aws) + "): one custodian would hold two shares",
		}},
		{"both rules", []string{u(socket), u(aws), u(aws)}, []string{own(1, u(socket)), "backends[3].kmsplugin.endpoint: " + u(aws) + " is already the socket of backends[2]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(kmspluginYAML(t, socket, tc.endpoints...)))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("error %d:\n  %s\nwant it to start\n  %s", i, lines[i], want)
				}
			}
		})
	}

	t.Run("endpoint is the socket through a symlink, listening", func(t *testing.T) {
		l, err := net.Listen("unix", socket)
		mustDo(t, err)
		defer l.Close()
		_, err = Parse([]byte(kmspluginYAML(t, socket, u(ownLink))))
		if err == nil || !strings.Contains(err.Error(), own(1, u(ownLink))) {
			t.Fatalf("got %v, want %q", err, own(1, u(ownLink)))
		}
	})
}

// TestOverridesAreValidated: what overrides the file (serve's --socket)
// is what the endpoint is checked against.
func TestOverridesAreValidated(t *testing.T) {
	dir := shortDir(t)
	socket, plugin := filepath.Join(dir, "kms.sock"), filepath.Join(dir, "plugin.sock")
	setSocket := func(s string) func(*Config) { return func(c *Config) { c.Socket = s } }

	y := kmspluginYAML(t, socket, "unix://"+plugin)
	if _, err := Parse([]byte(y)); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte(y), setSocket(plugin))
	if want := "backends[1].kmsplugin.endpoint: unix://" + plugin + " is Trousseau's own socket (socket: " + plugin + ")"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("socket overridden to the endpoint: %v, want %q", err, want)
	}

	// The file's socket is the endpoint, but the one serve will use is not.
	y = kmspluginYAML(t, plugin, "unix://"+plugin)
	if _, err := Parse([]byte(y)); err == nil {
		t.Fatal("the file's own socket as endpoint accepted")
	}
	if c, err = Parse([]byte(y), setSocket(socket)); err != nil || c.Socket != socket {
		t.Fatalf("socket overridden away from the endpoint: %v", err)
	}

	p := filepath.Join(dir, "c.yaml")
	mustDo(t, os.WriteFile(p, []byte(y), 0o600))
	if _, err := Load(p, setSocket(socket)); err != nil {
		t.Fatalf("Load with the override: %v", err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "config "+p+": backends[1].kmsplugin.endpoint: ") {
		t.Fatalf("Load without it: %v", err)
	}
}

// TestKmspluginFieldsByPath: the strict field walk reads a kmsplugin
// block like any other: a bare number or a bad duration in its timeout,
// and a typo, are named by their path.
func TestKmspluginFieldsByPath(t *testing.T) {
	dir := shortDir(t)
	for _, tc := range []struct{ name, block, want string }{
		{"bare integer timeout", "{endpoint: unix:///run/a.sock, timeout: 3}", `backends[1].kmsplugin.timeout: want a duration with its unit such as "3s", got the bare number 3`},
		{"bare decimal timeout", "{endpoint: unix:///run/a.sock, timeout: 2.5}", `backends[1].kmsplugin.timeout: want a duration with its unit such as "2.5s", got the bare number 2.5`},
		{"bad timeout", "{endpoint: unix:///run/a.sock, timeout: soon}", `backends[1].kmsplugin.timeout: want a duration such as "30s", got "soon"`},
		{"timeout not a scalar", "{endpoint: unix:///run/a.sock, timeout: [3s]}", `backends[1].kmsplugin.timeout: want a duration such as "30s", got [3s]`},
		{"negative timeout", "{endpoint: unix:///run/a.sock, timeout: -1s}", `backends[1]: kmsplugin.timeout: must not be negative, got -1s`},
		{"typo", "{endpoint: unix:///run/a.sock, endpiont: x}", `unknown field "backends[1].kmsplugin.endpiont"`},
		{"tcp endpoint", "{endpoint: tcp://127.0.0.1:1}", `backends[1]: kmsplugin.endpoint: "tcp://127.0.0.1:1": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(kmspluginYAML(t, filepath.Join(dir, "kms.sock"), "X"), "{endpoint: X}", tc.block, 1)
			_, err := Parse([]byte(y))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	c, err := Parse([]byte(strings.Replace(kmspluginYAML(t, filepath.Join(dir, "kms.sock"), "X"), "{endpoint: X}", "{endpoint: unix:///run/a.sock, timeout: 2500ms, apiVersion: v1, publicKey: true}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Backends[1].Kind(); got != "kmsplugin" {
		t.Fatalf("kind %q", got)
	}
}
