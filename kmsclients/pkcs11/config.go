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
	// Module is the absolute path of the vendor's PKCS#11 library,
	// loaded at start.
	Module string `json:"module"`
	// TokenLabel or Slot (exactly one) names the token. Prefer the label:
	// slot IDs may change (SoftHSM2's do at each initialisation).
	TokenLabel string `json:"tokenLabel,omitempty"`
	Slot       *uint  `json:"slot,omitempty"`
	// PinFile holds the user PIN (trailing newline dropped), a regular
	// file closed to others, read at each login.
	PinFile string `json:"pinFile"`
	// KeyLabel is the AES key's CKA_LABEL; KeyID, in hex, picks among
	// keys under one label (the identity has the key's own CKA_ID).
	KeyLabel string `json:"keyLabel"`
	KeyID    string `json:"keyID,omitempty"`
	// Mechanism is [MechanismGCM] (default) or [MechanismKWP].
	Mechanism string `json:"mechanism,omitempty"`
	// Timeout, if set, bounds each operation, session wait included, on
	// top of the caller's deadline.
	Timeout Duration `json:"timeout,omitzero"`
}

// Duration is the config file's one duration type ("3s", "500ms").
type Duration = kmsclients.Duration

// Mechanisms: CKM_AES_GCM, or CKM_AES_KEY_WRAP_PAD (RFC 5649) for tokens
// without AES-GCM.
const (
	MechanismGCM = "aes-gcm"
	MechanismKWP = "aes-key-wrap-pad"
)

// Limits keeping a key identity within [kmsclients.MaxKeyIdentitySize].
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

// validateModule wants an absolute path: a bare name would be searched
// along LD_LIBRARY_PATH, not what an operator means.
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

// validateTokenLabel: CK_TOKEN_INFO holds 32 bytes padded with spaces,
// so trailing spaces cannot be told apart.
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
