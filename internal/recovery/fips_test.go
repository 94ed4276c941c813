package recovery

import (
	"context"
	"crypto/fips140"
	"errors"
	"testing"
)

func TestDataDecryptionRefusedInFIPSOnlyMode(t *testing.T) {
	if err := checkDataMode(true); !errors.Is(err, ErrFIPSOnly) {
		t.Fatalf("enforced: %v, want ErrFIPSOnly", err)
	}
	if err := checkDataMode(false); err != nil {
		t.Fatalf("not enforced: %v", err)
	}
}

// NeedsDataDecryption marks a test that decrypts objects. Under
// GODEBUG=fips140=only (hack/test.sh's FIPS pass) recovery refuses that
// with ErrFIPSOnly: the test checks the refusal and stops there.
func NeedsDataDecryption(t testing.TB) {
	t.Helper()
	if !fips140.Enforced() {
		return
	}
	if _, _, err := DecryptValue(context.Background(), nil, "", "", "/registry/secrets/ns/name", nil); !errors.Is(err, ErrFIPSOnly) {
		t.Fatalf("decrypt-value in FIPS-only mode: %v, want ErrFIPSOnly", err)
	}
	if _, err := Run(context.Background(), Options{}); !errors.Is(err, ErrFIPSOnly) {
		t.Fatalf("recover in FIPS-only mode: %v, want ErrFIPSOnly", err)
	}
	t.Skip("decrypts objects with kube-apiserver's code, which FIPS-only mode refuses: the refusal (ErrFIPSOnly) is checked above")
}
