package testutil

import (
	"crypto/fips140"
	"testing"
)

// NeedsAge skips a test of the officers' branch in FIPS 140-only mode:
// age's X25519 and ChaCha20-Poly1305 are refused there (key generation
// loops forever), and so is the branch; envelope's
// TestOfficersRefusedInFIPSOnlyMode checks the refusal.
func NeedsAge(t testing.TB) {
	t.Helper()
	if fips140.Enforced() {
		t.Skip("age is not an approved service: the officers' branch is refused under GODEBUG=fips140=only")
	}
}
