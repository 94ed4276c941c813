package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
)

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

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts plaintext as ciphertext version 2: a fresh random salt
// derives a key used for this message only, so the number of messages
// sealed under one DEK has no bearing on nonce collisions (the 2^32 limit
// of random 96-bit nonces under one key does not apply).
func (d *dek) seal(plaintext []byte) ([]byte, error) {
	ct := make([]byte, 1+saltSize, 1+saltSize+len(plaintext)+tagSize)
	ct[0] = ciphertextVersion
	if _, err := rand.Read(ct[1:]); err != nil {
		return nil, err
	}
	aead, err := d.messageAEAD(ct[1:])
	if err != nil {
		return nil, err
	}
	return aead.Seal(ct, zeroNonce[:], plaintext, dataAAD(d.headerHash)), nil
}

// open decrypts a ciphertext of either version; checkCiphertext has
// checked its shape.
func (d *dek) open(ct []byte) ([]byte, error) {
	var (
		aead      cipher.AEAD
		nonce, sb []byte
		err       error
	)
	switch ct[0] {
	case ciphertextVersion1:
		aead, nonce, sb = d.aead, ct[1:1+nonceSize], ct[1+nonceSize:]
	default:
		aead, err = d.messageAEAD(ct[1 : 1+saltSize])
		nonce, sb = zeroNonce[:], ct[1+saltSize:]
	}
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, sb, dataAAD(d.headerHash))
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext failed authentication", ErrInvalid)
	}
	return pt, nil
}

// messageAEAD is the AES-256-GCM key of one version-2 message.
func (d *dek) messageAEAD(salt []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, d.dataRoot, salt, infoMessage, 32)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newGCM(key)
}

// zeroNonce is the nonce of every version-2 message: each has a key of
// its own, so a fixed nonce is never reused under one key.
var zeroNonce [nonceSize]byte

func dataAAD(headerHash [32]byte) []byte {
	return append([]byte(aadData), headerHash[:]...)
}
