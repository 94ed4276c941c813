package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Server is a real server the tests run against, built by a hack/ script
// at the version pinned in hack/versions.env.
type Server struct {
	Name       string // the binary's name, and its directory in the cache
	Env        string // an environment variable that may name the binary instead
	VersionKey string // its key in hack/versions.env
	Script     string // what builds it
}

// The test servers.
var (
	Vault         = Server{"vault", "TROUSSEAU_VAULT", "VAULT_VERSION", "hack/vault.sh"}
	LocalKMS      = Server{"local-kms", "TROUSSEAU_LOCAL_KMS", "LOCAL_KMS_VERSION", "hack/local-kms.sh"}
	KubeAPIServer = Server{"kube-apiserver", "TROUSSEAU_KUBE_APISERVER", "K8S_VERSION", "hack/kube.sh kube-apiserver"}
	Etcd          = Server{"etcd", "TROUSSEAU_ETCD", "ETCD_VERSION", "hack/kube.sh etcd"}
)

// Binary finds the server from its environment variable or the cache
// ($HOME/.cache/trousseau/<name>/<version>/<name>). A missing server fails
// the test (./hack/test.sh builds every one), or skips it under -short.
func (s Server) Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs the %s server: run %s (./hack/test.sh builds every server), then test without -short", s.Name, s.Script)
	}
	version := PinnedVersion(t, s.VersionKey)
	bin := os.Getenv(s.Env)
	if bin == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("%s: %v; run %s, or set %s to the binary", s.Name, err, s.Script, s.Env)
		}
		bin = filepath.Join(home, ".cache", "trousseau", s.Name, version, s.Name)
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("%s %s is not built at %s (%v): run %s first (./hack/test.sh does), or set %s to the binary", s.Name, version, bin, err, s.Script, s.Env)
	}
	return bin
}

// PinnedVersion reads key from hack/versions.env.
func PinnedVersion(t testing.TB, key string) string {
	t.Helper()
	path := filepath.Join(RepoRoot(t), "hack", "versions.env")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return ""
}

// RepoRoot is the directory of go.mod, found upwards from the test's
// package directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// BuildTrousseau builds the trousseau binary into dir and returns its
// path. It takes no testing.TB so that a TestMain can build it once.
func BuildTrousseau(dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "trousseau")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/trousseau")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/trousseau: %v\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
