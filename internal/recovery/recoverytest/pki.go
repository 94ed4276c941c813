package recoverytest

import (
	"testing"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// writeTLSFiles makes a CA, a server certificate for 127.0.0.1 and a
// client certificate, as PEM files in dir. It returns the CA file and
// the (cert, key) files of the server and the client.
func writeTLSFiles(t testing.TB, dir string) (ca string, server, client [2]string) {
	t.Helper()
	p := testutil.NewPKI(t, dir, "recovery-test-ca")
	server[0], server[1] = p.Server(t, "server")
	client[0], client[1] = p.Client(t, "client", "client")
	return p.CAFile, server, client
}
