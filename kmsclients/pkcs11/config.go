package pkcs11

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Config is the YAML block `pkcs11: {...}` of a backend.
type Config struct {
	// Module is the absolute path of the vendor's PKCS#11 library
	// (/usr/lib/softhsm/libsofthsm2.so, libCryptoki2_64.so, ...). It is
	// loaded when the plugin starts: a path that is not a loadable
	// PKCS#11 module stops it with an error naming pkcs11.module.
	Module string `json:"module"`
	// TokenLabel names the token by its label; Slot names it by its slot
	// ID instead. Exactly one is set. A label is the better choice where
	// slot IDs are not stable (SoftHSM2 gives a token a new slot ID each
	// time it is initialised).
	TokenLabel string `json:"tokenLabel,omitempty"`
	Slot       *uint  `json:"slot,omitempty"`
	// PinFile holds the user PIN (a trailing newline is dropped). Like a
	// key file, it must be a regular file that others cannot read or
	// write. It is read each time a session logs in, never logged.
	PinFile string `json:"pinFile"`
	// KeyLabel is the CKA_LABEL of the AES key that wraps shares, and
	// KeyID, in hex, its CKA_ID, to tell apart keys under one label.
	// KeyID only picks the key: the key identity has the key's own
	// CKA_ID, given or not. Trousseau never creates the key: the
	// operator does.
	KeyLabel string `json:"keyLabel"`
	KeyID    string `json:"keyID,omitempty"`
	// Mechanism is MechanismGCM (the default) or MechanismKWP, for
	// tokens without AES-GCM.
	Mechanism string `json:"mechanism,omitempty"`
	// Timeout, when set, bounds each wrap, unwrap or probe, waiting for a
	// session included. The caller's deadline always applies; unset, it
	// is the only one.
	Timeout Duration `json:"timeout,omitzero"`
}

// Duration is the config file's one duration type ("3s", "500ms").
type Duration = kmsclients.Duration

// The mechanisms a share can be wrapped with.
const (
	// MechanismGCM is CKM_AES_GCM: the share is encrypted with the
	// share's associated data as GCM's additional authenticated data.
	MechanismGCM = "aes-gcm"
	// MechanismKWP is CKM_AES_KEY_WRAP_PAD (RFC 5649): the share and a
	// binding to its associated data are wrapped as a secret-key object.
	MechanismKWP = "aes-key-wrap-pad"
)

// Limits that keep a key identity within kmsclients.MaxKeyIdentitySize
// whatever the labels hold (see identity.go).
const (
	maxTokenLabel = 32 // the size of CK_TOKEN_INFO's label
	maxKeyLabel   = 64
	maxKeyID      = 32
)

// Validate names the field at fault.
func (c Config) Validate() error {
	if err := validateModule(c.Module); err != nil {
		return fmt.Errorf("pkcs11.module: %w", err)
	}
	switch {
	case c.TokenLabel == "" && c.Slot == nil:
		return errors.New("pkcs11.tokenLabel: required, or pkcs11.slot: give the token by its label or its slot ID")
	case c.TokenLabel != "" && c.Slot != nil:
		return errors.New("pkcs11.slot: give the token by tokenLabel or by slot, not both")
	}
	if err := validateTokenLabel(c.TokenLabel); err != nil {
		return fmt.Errorf("pkcs11.tokenLabel: %w", err)
	}
	switch {
	case c.PinFile == "":
		return errors.New("pkcs11.pinFile: required (a file holding the user PIN; a PIN is never written in the config)")
	case strings.TrimSpace(c.PinFile) != c.PinFile:
		return fmt.Errorf("pkcs11.pinFile: %q has leading or trailing spaces", c.PinFile)
	}
	if err := validateKeyLabel(c.KeyLabel); err != nil {
		return fmt.Errorf("pkcs11.keyLabel: %w", err)
	}
	if _, err := parseKeyID(c.KeyID); err != nil {
		return fmt.Errorf("pkcs11.keyID: %w", err)
	}
	if _, err := mechanismOf(c.Mechanism); err != nil {
		return fmt.Errorf("pkcs11.mechanism: %w", err)
	}
	if c.Timeout.Duration < 0 {
		return fmt.Errorf("pkcs11.timeout: must not be negative, got %s", c.Timeout.Duration)
	}
	return nil
}

// validateModule wants an absolute path: a bare name would be looked for
// along the loader's search path (LD_LIBRARY_PATH), which is not what an
// operator who names a vendor's library means.
func validateModule(path string) error {
	switch {
	case path == "":
		return errors.New("required: the path of the vendor's PKCS#11 library (.so)")
	case strings.ContainsRune(path, 0):
		return errors.New("holds a NUL byte")
	case !filepath.IsAbs(path):
		return fmt.Errorf("%q is not an absolute path", path)
	}
	return nil
}

// validateTokenLabel checks a label as CK_TOKEN_INFO holds it: at most 32
// bytes, padded with spaces, so trailing spaces cannot be told apart.
func validateTokenLabel(label string) error {
	switch {
	case label == "":
		return nil
	case len(label) > maxTokenLabel:
		return fmt.Errorf("%d bytes; a token label has at most %d", len(label), maxTokenLabel)
	case !utf8.ValidString(label):
		return errors.New("not UTF-8")
	case strings.TrimRight(label, " ") != label:
		return fmt.Errorf("%q ends in spaces, which a token label cannot be told apart from its padding", label)
	}
	return nil
}

func validateKeyLabel(label string) error {
	switch {
	case label == "":
		return errors.New("required: the CKA_LABEL of the AES key on the token")
	case len(label) > maxKeyLabel:
		return fmt.Errorf("%d bytes; at most %d", len(label), maxKeyLabel)
	case !utf8.ValidString(label):
		return errors.New("not UTF-8")
	}
	return nil
}

// parseKeyID decodes a CKA_ID given in hex ("01", "a1b2"); "" is none.
func parseKeyID(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	id, err := hex.DecodeString(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q is not hex (give the CKA_ID as pkcs11-tool prints it, such as 01 or a1b2)", s)
	case len(id) > maxKeyID:
		return nil, fmt.Errorf("%d bytes; at most %d", len(id), maxKeyID)
	}
	return id, nil
}

// mechanism is how a share is wrapped; its value is the frame's byte.
type mechanism byte

const (
	mechGCM mechanism = 1
	mechKWP mechanism = 2
)

func (m mechanism) String() string {
	switch m {
	case mechGCM:
		return MechanismGCM
	case mechKWP:
		return MechanismKWP
	}
	return fmt.Sprintf("mechanism %d", byte(m))
}

func mechanismOf(name string) (mechanism, error) {
	switch name {
	case "", MechanismGCM:
		return mechGCM, nil
	case MechanismKWP:
		return mechKWP, nil
	}
	return 0, fmt.Errorf("%q: want %s (the default) or %s", name, MechanismGCM, MechanismKWP)
}
