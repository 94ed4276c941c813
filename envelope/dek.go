package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync/atomic"
)

// dek is an unwrapped DEK, ready to seal and open.
type dek struct {
	dataRoot   []byte      // derives one AES-256-GCM key per message (ciphertext versions 2 and 3)
	aead       cipher.AEAD // the one key of ciphertext version 1, for reading only
	header     []byte      // encoded header that wraps it
	headerHash [32]byte
	parsed     *Header
	keyID      string
	// authenticated: the shares that made it all came from secret-key
	// backends, so k custodians made it ([lifecycle.unlockCurrent]).
	authenticated bool
	// adoptTried: when adopting it was last considered (UnixNano), 0 never.
	adoptTried atomic.Int64
}

// newDEK prepares an unwrapped DEK whose header is raw. key is not kept:
// only keys derived from it are.
func newDEK(key, raw []byte, h *Header) (*dek, error) {
	v1Key := deriveKey(key, infoData)
	defer clear(v1Key)
	aead, err := newGCM(v1Key)
	if err != nil {
		return nil, err
	}
	return &dek{
		dataRoot:   deriveKey(key, infoDataRoot),
		aead:       aead,
		header:     raw,
		headerHash: sha256.Sum256(raw),
		parsed:     h,
		keyID:      h.KeyID(),
	}, nil
}

// newGCM is AES-256-GCM whose Seal makes the nonce inside the Go
// cryptographic module and whose Open reads it from the front of the
// ciphertext: the one form of GCM that GODEBUG=fips140=only allows.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// seal encrypts plaintext under a key derived from a fresh random salt
// for this message only, so the number of messages sealed under one DEK
// has no bearing on nonce collisions: as version 3 in FIPS 140-3 mode,
// else as version 2, which every earlier release reads (a rolling upgrade
// of an HA control plane runs both builds side by side for a while).
func (d *dek) seal(plaintext []byte) ([]byte, error) {
	if !fips140.Enabled() {
		return d.sealV2(plaintext)
	}
	ct := make([]byte, 1+saltSize, ciphertextOverhead+len(plaintext))
	ct[0] = ciphertextVersion
	if _, err := rand.Read(ct[1:]); err != nil {
		return nil, err
	}
	aead, err := d.messageAEAD(infoMessage, ct[1:])
	if err != nil {
		return nil, err
	}
	return aead.Seal(ct, nil, plaintext, dataAAD(d.headerHash)), nil
}

// sealV2 writes version 2: the message key's GCM with a zero nonce, which
// FIPS-only mode refuses (a caller-chosen nonce) and the default mode
// allows; each key seals one message.
func (d *dek) sealV2(plaintext []byte) ([]byte, error) {
	ct := make([]byte, 1+saltSize, 1+saltSize+len(plaintext)+tagSize)
	ct[0] = ciphertextVersion2
	if _, err := rand.Read(ct[1:]); err != nil {
		return nil, err
	}
	key, err := hkdf.Key(sha256.New, d.dataRoot, ct[1:], infoMessage2, 32)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return aead.Seal(ct, make([]byte, nonceSize), plaintext, dataAAD(d.headerHash)), nil
}

// open decrypts a ciphertext of any version; checkCiphertext has checked
// its shape.
func (d *dek) open(ct []byte) ([]byte, error) {
	aead, sealed, err := d.opener(ct)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nil, sealed, dataAAD(d.headerHash))
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext failed authentication", ErrInvalid)
	}
	return pt, nil
}

// opener returns the key of ct and what that key opens: the nonce, then
// the encrypted plaintext and its tag.
func (d *dek) opener(ct []byte) (cipher.AEAD, []byte, error) {
	switch ct[0] {
	case ciphertextVersion1:
		return d.aead, ct[1:], nil
	case ciphertextVersion2:
		aead, err := d.messageAEAD(infoMessage2, ct[1:1+saltSize])
		// Version 2's nonce is zero and not stored: put it where Open reads it.
		sealed := make([]byte, nonceSize, nonceSize+len(ct))
		return aead, append(sealed, ct[1+saltSize:]...), err
	default:
		aead, err := d.messageAEAD(infoMessage, ct[1:1+saltSize])
		return aead, ct[1+saltSize:], err
	}
}

// messageAEAD is the AES-256-GCM key of one message of version 2 or 3,
// told apart by info.
func (d *dek) messageAEAD(info string, salt []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, d.dataRoot, salt, info, 32)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newGCM(key)
}

func dataAAD(headerHash [32]byte) []byte {
	return append([]byte(aadData), headerHash[:]...)
}
