package testutil

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// ServerBinary finds a test server that a hack/ script built into the
// cache ($HOME/.cache/trousseau/<name>/<version>/<name>), or the path in
// the environment variable env. A missing server fails the test: tests
// against real servers are never skipped.
func ServerBinary(t testing.TB, env, name, version, script string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("%s: %v; run %s, or set %s to the binary", name, err, script, env)
		}
		bin = filepath.Join(home, ".cache", "trousseau", name, version, name)
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("%s %s is not built at %s (%v): run %s first (./hack/test.sh does), or set %s to the binary", name, version, bin, err, script, env)
	}
	return bin
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago: for a server about to start, or for an address where
// nothing answers.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
