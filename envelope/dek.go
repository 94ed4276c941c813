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
	dataRoot      []byte      // derives a key per message (versions 2 and 3)
	aead          cipher.AEAD // version 1's key, for reading only
	header        []byte
	headerHash    [32]byte
	parsed        *Header
	keyID         string
	authenticated bool         // k secret-key custodians made it
	adoptTried    atomic.Int64 // UnixNano of the last adoption try, 0 never
}

// newDEK keeps only keys derived from key.
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

// newGCM makes its nonce inside the Go FIPS module: the one GCM that
// GODEBUG=fips140=only allows to seal.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// seal writes version 3 in FIPS 140-3 mode, else version 2, which every
// earlier release reads (a rolling upgrade runs both side by side).
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

// sealV2 uses a zero nonce, safe as each key seals one message;
// FIPS-only mode refuses it.
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

// open decrypts any version; checkCiphertext has checked the shape.
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

// opener returns ct's key and what it opens: nonce, ciphertext, tag.
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

// messageAEAD is one message's key; info tells versions 2 and 3 apart.
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
