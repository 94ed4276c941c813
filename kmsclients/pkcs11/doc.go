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
// Trousseau never creates the key: the operator does, with the vendor's
// tool or pkcs11-tool. A share is encrypted on the token with AES-GCM,
// the share's associated data (its DEK and index) as GCM's additional
// authenticated data, and the IV carried in the stored share; or, for a
// token without AES-GCM, wrapped with AES key wrap with padding (RFC
// 5649) together with a binding to its associated data, checked in
// constant time on unwrap (see frame.go).
//
// The key identity is a PKCS#11 URI naming the token (label and serial
// number) and the key (label, its own CKA_ID, and its CKA_CHECK_VALUE),
// as the token has them whatever the config says, so that a different
// key under the same label is a different identity and rotates the DEK,
// and one key is one custodian however it is reached (see keyIdentity).
//
// A backend keeps a few logged-in sessions, safe for concurrent use. A
// session the token dropped (CKR_SESSION_HANDLE_INVALID,
// CKR_USER_NOT_LOGGED_IN, ...) is replaced by another, logged in again;
// a token that went away (CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED, a
// token re-initialised) is looked for again after C_Finalize and
// C_Initialize, so that it recovers without a restart. A PIN the token
// refused is not tried again until the PIN file changes: each wrong try
// counts toward locking it, so the logins of one token are made one at a
// time, and its refused PINs remembered, for every backend on it (see
// loginGate).
//
// The binding (github.com/miekg/pkcs11) needs cgo. A build without cgo
// compiles, and New refuses with an error that says so.
package pkcs11
