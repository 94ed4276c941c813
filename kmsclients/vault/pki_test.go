package vault

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"testing"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// testPKI is a throwaway CA with a server certificate for Vault's TLS
// listener and a client certificate for cert auth, written as PEM files.
type testPKI struct {
	caFile, caPEM             string
	serverCert, serverKey     string
	clientCert, clientKey     string
	strangerCert, strangerKey string // a client certificate of another CA
}

// serverName is the DNS name in the server certificate besides 127.0.0.1.
const serverName = "vault.trousseau.test"

func newTestPKI(t testing.TB, dir string) *testPKI {
	t.Helper()
	ca := testutil.NewPKI(t, dir, "trousseau test CA")
	p := &testPKI{caFile: ca.CAFile, caPEM: ca.CAPEM}
	p.serverCert, p.serverKey = ca.Server(t, "server", serverName)
	p.clientCert, p.clientKey = ca.Client(t, "client", "trousseau")
	p.strangerCert, p.strangerKey = testutil.SelfSigned(t, dir, "stranger")
	return p
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newKey makes a P-256 key (the TokenReview stand-in signs JWTs with one).
func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
