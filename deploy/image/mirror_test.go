package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The host's apt sources name the mirror: both formats, only Debian's own
// suites with main, and nothing of other repositories or source lines.
func TestHostMirrors(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755)
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sources.list", `# a comment
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.internal/debian/ bookworm main contrib
deb-src http://src.internal/debian bookworm main
deb https://download.example.com/linux/debian bookworm stable
deb http://old.internal/debian-security bookworm/updates main
`)
	write("sources.list.d/debian.sources", `Types: deb deb-src
# http://a.comment.example/debian
URIs: https://mirror.internal/debian https://second.internal/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 URIs: http://not.a.field/

Types: deb
URIs: https://mirror.internal/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: https://disabled.internal/debian
Suites: bookworm
Components: main

Types: deb
URIs: https://pgdg.example.com/apt
Suites: bookworm-pgdg
Components: main
`)
	write("sources.list.d/other.list.disabled", "deb http://ignored.internal/debian bookworm main\n")
	m, err := hostMirrors(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := mirrors{
		"debian":          {"http://mirror.internal/debian", "https://mirror.internal/debian", "https://second.internal/debian"},
		"debian-security": {"http://old.internal/debian-security", "https://mirror.internal/debian-security"},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("mirrors:\n got %v\nwant %v", m, want)
	}
	urls, err := m.urls("debian-security/pool/updates/main/c/ca/ca_1_all.deb")
	if err != nil || urls[0] != "http://old.internal/debian-security/pool/updates/main/c/ca/ca_1_all.deb" {
		t.Errorf("urls: %v %v", urls, err)
	}

	none, err := hostMirrors(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.urls("debian/pool/a.deb"); err == nil || !strings.Contains(err.Error(), "--debian-mirror") {
		t.Errorf("no host mirror: %v, want an error naming --debian-mirror", err)
	}
}

func TestMirrorFlag(t *testing.T) {
	m, err := parseMirrorFlag("https://mirror.internal/")
	want := mirrors{"debian": {"https://mirror.internal/debian"}, "debian-security": {"https://mirror.internal/debian-security"}}
	if err != nil || !reflect.DeepEqual(m, want) {
		t.Errorf("one URL: %v %v", m, err)
	}
	m, err = parseMirrorFlag("debian=http://a.internal/deb/,debian-security=http://b.internal/sec")
	want = mirrors{"debian": {"http://a.internal/deb"}, "debian-security": {"http://b.internal/sec"}}
	if err != nil || !reflect.DeepEqual(m, want) {
		t.Errorf("pairs: %v %v", m, err)
	}
	for _, bad := range []string{"mirror.internal", "ftp://mirror.internal", "ubuntu=http://a.internal", "debian=", "file:///srv/debian"} {
		if _, err := parseMirrorFlag(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
