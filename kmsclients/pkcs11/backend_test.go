//go:build cgo

package pkcs11

import (
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// TestConformance runs the shared suite against SoftHSM2, once per
// mechanism. The unavailable backend names a token that is not there.
func TestConformance(t *testing.T) {
	for _, mech := range []string{MechanismGCM, MechanismKWP} {
		t.Run(mech, func(t *testing.T) {
			h := newSoftHSM(t)
			h.initToken(t, "conformance")
			h.keygen(t, "conformance", "share", "01")
			h.keygen(t, "conformance", "other", "02")
			config := func(t *testing.T, token, label string) Config {
				c := h.config(t, token, label)
				c.Mechanism = mech
				return c
			}
			kmstest.Run(t, kmstest.Harness{
				BackendKind: "pkcs11",
				New: func(t *testing.T) kmsclients.Backend {
					return h.backend(t, "hsm", config(t, "conformance", "share"))
				},
				OtherKey: func(t *testing.T) kmsclients.Backend {
					return h.backend(t, "hsm-other", config(t, "conformance", "other"))
				},
				Unavailable: func(t *testing.T) kmsclients.Backend {
					return h.backend(t, "hsm-gone", config(t, "absent", "share"))
				},
			})
		})
	}
}
