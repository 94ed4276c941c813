// Package pkcs11 is a Trousseau backend that wraps shares with an AES key
// kept in a hardware security module, through the vendor's PKCS#11
// module (Thales Luna, Entrust nShield, Utimaco, YubiHSM, AWS CloudHSM,
// SoftHSM2 for tests).
//
// Config example (in the backends list of the serve config):
//
//	backends:
//	  - name: hsm
//	    pkcs11:
//	      module: /usr/lib/softhsm/libsofthsm2.so
//	      tokenLabel: trousseau          # or slot: 0
//	      pinFile: /etc/trousseau/hsm.pin
//	      keyLabel: trousseau-share
//	      # keyID: "01"
//	      # mechanism: aes-gcm           # or aes-key-wrap-pad
//	      # timeout: 5s
//
// The operator creates the key; Trousseau never does. Mechanisms, the key
// identity (a PKCS#11 URI with the key's check value), session and token
// recovery and the refused-PIN memory are described in
// docs/backends/pkcs11.md. The binding needs cgo; without it New refuses.
package pkcs11
