package vault

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// framing stores binding (1 byte) | transit's "vault:v<N>:..." text. The
// checksum makes a damaged prefix [kmsclients.ErrInvalidCiphertext], not
// whatever Vault makes of a version it lacks.
var framing = kmsclients.Framing{Version: 1, Checksum: true}

// How the associated data is bound (see bindingFor). The frame's byte
// only records it: Unwrap refuses one that disagrees with the key's type.
const (
	bindAssociatedData byte = 1
	bindInPlaintext    byte = 2
)

// bindingNames name the bindings in errors.
var bindingNames = map[byte]string{bindAssociatedData: "associated_data", bindInPlaintext: "a digest sealed with the share"}

// bindingSize: 128 bits tell shares apart and fit RSA-2048 with OAEP.
const bindingSize = 16

// Domain-separation prefixes for both forms of binding.
const (
	adPrefix      = "trousseau/vault/v1\x00"
	bindingPrefix = "trousseau/vault/aad-binding/v1\x00"
)

func frame(binding byte, ciphertext string) []byte {
	return framing.Frame(append([]byte{binding}, ciphertext...))
}

// unframe checks a stored share and returns its binding, the Vault
// ciphertext and the key version that ciphertext names.
func unframe(wrapped []byte) (binding byte, ciphertext string, version uint64, err error) {
	body, err := framing.Unframe(wrapped)
	if err != nil {
		return 0, "", 0, err
	}
	binding = body[0]
	if _, ok := bindingNames[binding]; !ok {
		return 0, "", 0, fmt.Errorf("wrapped share has unknown binding %d", binding)
	}
	ciphertext = string(body[1:])
	version, ok := ciphertextVersion(ciphertext)
	if !ok {
		return 0, "", 0, errors.New("wrapped share does not hold a transit ciphertext")
	}
	return binding, ciphertext, version, nil
}

// ciphertextVersion reads N from transit's "vault:v<N>:<base64>".
func ciphertextVersion(ct string) (uint64, bool) {
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		return 0, false
	}
	num, body, ok := strings.Cut(rest, ":")
	if !ok || body == "" || strings.ContainsAny(body, ": \n") {
		return 0, false
	}
	return parseVersion(num)
}

// parseVersion reads a key version: a positive decimal with no sign or
// leading zero, so that each version has exactly one spelling.
func parseVersion(s string) (uint64, bool) {
	if s == "" || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return v, true
}

// associatedData is what transit authenticates with an AEAD key.
func associatedData(aad []byte) string {
	return base64.StdEncoding.EncodeToString(append([]byte(adPrefix), aad...))
}

// aadBinding is the digest sealed in front of the share for key types
// without associated data.
func aadBinding(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindingPrefix))
	h.Write(aad)
	return h.Sum(nil)[:bindingSize]
}

// parseIdentity splits "vault:<scheme>://<host>/<key path>:v<N>". The
// address is dropped: shares must unwrap after Vault moves behind
// another name.
func parseIdentity(id string) (keyPath string, version uint64, ok bool) {
	rest, ok := strings.CutPrefix(id, "vault:")
	if !ok {
		return "", 0, false
	}
	scheme, rest, ok := strings.Cut(rest, "://")
	if !ok || (scheme != "https" && scheme != "http") {
		return "", 0, false
	}
	_, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndex(rest, ":v")
	if i <= 0 {
		return "", 0, false
	}
	version, ok = parseVersion(rest[i+2:])
	return rest[:i], version, ok
}

// custodianKey names a transit key by cluster ID and key path; it cannot
// parse as a key identity.
func custodianKey(clusterID, keyPath string) string {
	return "vault:cluster:" + clusterID + "/" + keyPath
}

// keyPath is [namespace/]mount/key.
func keyPath(c Config) string {
	p := c.TransitMount + "/" + c.KeyName
	if c.Namespace != "" {
		p = c.Namespace + "/" + p
	}
	return p
}

// identityPrefix is the key identity without its version number; c must
// have its defaults.
func identityPrefix(c Config) string {
	return "vault:" + c.Address + "/" + keyPath(c) + ":v"
}
