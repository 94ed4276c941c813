package recovery

import (
	"crypto/fips140"
	"errors"
)

// ErrFIPSOnly is why recover and decrypt-value do not run under
// GODEBUG=fips140=only: each object is decrypted with kube-apiserver's
// own code, which opens AES-GCM through the general API that mode
// refuses (and AES-CBC for KMS v1 data written before Kubernetes 1.25).
// drill unwraps DEKs only and runs in that mode.
var ErrFIPSOnly = errors.New("recovery decrypts each object with kube-apiserver's own code (AES-GCM under the apiserver's nonces, AES-CBC for KMS v1 data before Kubernetes 1.25), which GODEBUG=fips140=only refuses: run it with GODEBUG=fips140=on (the FIPS build's module still does every operation) or with the default build; drill runs in either mode")

// checkDataMode refuses to decrypt objects when FIPS 140-only mode is
// enforced, with ErrFIPSOnly rather than crypto/cipher's error on every
// object.
func checkDataMode(enforced bool) error {
	if enforced {
		return ErrFIPSOnly
	}
	return nil
}

func checkFIPS() error { return checkDataMode(fips140.Enforced()) }
