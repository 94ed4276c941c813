//go:build !cgo

package pkcs11

import (
	"context"
	"strings"
	"testing"
)

// TestNewWithoutCgo: a build without cgo compiles, checks the config as
// any build does, and then says what it lacks.
func TestNewWithoutCgo(t *testing.T) {
	_, err := New(context.Background(), "hsm", validConfig())
	if err == nil || err.Error() != "pkcs11 hsm: this trousseau was built without cgo; the pkcs11 backend needs a cgo build (CGO_ENABLED=1)" {
		t.Fatalf("New without cgo: %v", err)
	}
	_, err = New(context.Background(), "hsm", Config{})
	if err == nil || !strings.Contains(err.Error(), "pkcs11.module: required") {
		t.Fatalf("New without cgo, of a config without a module: %v", err)
	}
}
