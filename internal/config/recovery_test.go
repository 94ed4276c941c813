package config

import (
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
)

// TestRecoveryBlockFollowsFIPSMode: the officers' branch seals with
// X25519 or ML-KEM and ChaCha20-Poly1305, which GODEBUG=fips140=only
// refuses. There `config check` refuses the block by its field, in the
// envelope's words, before a node starts; in any other mode the same
// block is valid. hack/test.sh runs it in both.
func TestRecoveryBlockFollowsFIPSMode(t *testing.T) {
	y := validYAML(t) + `recovery:
  threshold: 2
  signingKeyFile: /var/lib/trousseau/signing.key
  officers:
    - {name: ana, recipient: age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj}
    - {name: bo, recipient: age1lvyvwawkr0mcnnnncaghunadrqkmuf9e6507x9y920xxpp866cnql7dp2z}
    - {name: cy, recipient: age1ux29dpaltpxpkkrpc7l7w3xl47cqc5agywtgq5wn6mgrgp4rcv5suq3w2n}
`
	_, err := Parse([]byte(y))
	if fipsmode.Mode() != "only" {
		if err != nil {
			t.Fatalf("FIPS mode %s: %v", fipsmode.Mode(), err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "recovery: "+envelope.ErrFIPSOnly.Error()) {
		t.Fatalf("fips140=only: %v, want the recovery block refused with %q", err, envelope.ErrFIPSOnly)
	}
}
