package pkcs11

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// framing stores a share as:
//
//	version    1 byte
//	mechanism  1 byte   mechGCM or mechKWP
//	aes-gcm:            IV (12 bytes) || ciphertext || 16-byte tag
//	aes-key-wrap-pad:   the wrapped key object (a multiple of 8 bytes)
//
// No checksum: the token authenticates all after the mechanism byte. The
// IV is stored since some FIPS-mode HSMs choose their own.
var framing = kmsclients.Framing{Version: 1}

const (
	ivSize   = 12
	tagSize  = 16
	kwpBlock = 8
	// maxShareSize is far above a share (~33 bytes).
	maxShareSize = 1024
)

// frame encodes a wrapped share; for GCM, body is IV || ciphertext || tag.
func frame(m mechanism, body []byte) []byte {
	return framing.Frame(append([]byte{byte(m)}, body...))
}

// unframe parses a stored share, accepting only what frame can make.
func unframe(b []byte) (mechanism, []byte, error) {
	body, err := framing.Unframe(b)
	if err != nil {
		return 0, nil, err
	}
	m, body := mechanism(body[0]), body[1:]
	switch m {
	case mechGCM:
		if len(body) < ivSize+tagSize+1 {
			return 0, nil, fmt.Errorf("wrapped share (%s) has %d bytes after its header, want at least %d", m, len(body), ivSize+tagSize+1)
		}
	case mechKWP:
		// The smallest sealKWP value, 24 bytes, wraps into 32.
		if len(body) < 4*kwpBlock || len(body)%kwpBlock != 0 {
			return 0, nil, fmt.Errorf("wrapped share (%s) has %d bytes after its header, want a multiple of %d from %d", m, len(body), kwpBlock, 4*kwpBlock)
		}
	default:
		return 0, nil, fmt.Errorf("wrapped share names unknown %s", m)
	}
	return m, body, nil
}

// gcmAAD is GCM's associated data: a label, so nothing else the key
// encrypts passes for a share, then the share's aad (DEK and index).
func gcmAAD(aad []byte) []byte {
	return append([]byte("trousseau/pkcs11/v1\x00"), aad...)
}

// AES key wrap has no associated data, so the binding goes inside:
//
//	sealed = binding || u16 length || share || zero padding to 8 bytes
//	binding = SHA-256(bindingLabel || aad)[:16]
//
// compared in constant time on unwrap. Padding to 8 bytes ourselves means
// KWP adds none: SoftHSM2 2.6 hands KWP's padding back on unwrap.
const (
	bindingLabel = "trousseau/pkcs11/kwp-binding/v1\x00"
	bindingSize  = 16
	lengthSize   = 2
)

func binding(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindingLabel))
	h.Write(aad)
	return h.Sum(nil)[:bindingSize]
}

// sealKWP is the value wrapped for share.
func sealKWP(share, aad []byte) []byte {
	n := bindingSize + lengthSize + len(share)
	n += (kwpBlock - n%kwpBlock) % kwpBlock
	out := make([]byte, 0, n)
	out = append(out, binding(aad)...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(share)))
	out = append(out, share...)
	return out[:n] // the capacity's bytes are zero
}

// openKWP returns a copy of the share if sealKWP made sealed for aad.
func openKWP(sealed, aad []byte) ([]byte, bool) {
	const head = bindingSize + lengthSize
	if len(sealed) < head+1 || len(sealed)%kwpBlock != 0 {
		return nil, false
	}
	if subtle.ConstantTimeCompare(sealed[:bindingSize], binding(aad)) != 1 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(sealed[bindingSize:head]))
	if n == 0 || head+n > len(sealed) || len(sealed)-(head+n) >= kwpBlock {
		return nil, false
	}
	for _, c := range sealed[head+n:] {
		if c != 0 {
			return nil, false
		}
	}
	return append([]byte(nil), sealed[head:head+n]...), true
}
