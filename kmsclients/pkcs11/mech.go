//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// txn is one operation's module, logged-in session and key.
type txn struct {
	c   *pkcs11.Ctx
	s   *session
	key keyInfo
}

// encryptGCM returns IV || ciphertext || tag. The IV is random unless
// the token writes back its own (some FIPS-mode HSMs do).
func encryptGCM(t txn, share, aad []byte) ([]byte, error) {
	iv := make([]byte, ivSize)
	rand.Read(iv)
	params := pkcs11.NewGCMParams(iv, gcmAAD(aad), tagSize*8)
	defer params.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
	if err := t.c.EncryptInit(t.s.h, mech, t.key.h); err != nil {
		return nil, called("C_EncryptInit", err)
	}
	ct, err := t.c.Encrypt(t.s.h, share)
	if err != nil {
		return nil, called("C_Encrypt", err)
	}
	if got := params.IV(); len(got) == ivSize {
		iv = got
	}
	if len(ct) != len(share)+tagSize {
		return nil, fmt.Errorf("the token returned %d bytes of AES-GCM for a share of %d; want %d", len(ct), len(share), len(share)+tagSize)
	}
	return append(iv, ct...), nil
}

// decryptGCM opens what encryptGCM returned.
func decryptGCM(t txn, body, aad []byte) ([]byte, error) {
	params := pkcs11.NewGCMParams(bytes.Clone(body[:ivSize]), gcmAAD(aad), tagSize*8)
	defer params.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
	if err := t.c.DecryptInit(t.s.h, mech, t.key.h); err != nil {
		return nil, called("C_DecryptInit", err)
	}
	share, err := t.c.Decrypt(t.s.h, body[ivSize:])
	if err != nil {
		return nil, called("C_Decrypt", err)
	}
	if len(share) != len(body)-ivSize-tagSize {
		clear(share)
		return nil, withKind(kmsclients.ErrInvalidCiphertext, "the token returned %d bytes for %d of AES-GCM", len(share), len(body)-ivSize)
	}
	return share, nil
}

// carrierTemplate is the session object carrying a sealed share through
// key wrap: private, destroyed at once, readable only by this backend.
func carrierTemplate(value []byte) []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
	}
	if value != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE, value))
	}
	return tmpl
}

var kwp = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}

// wrapKWP wraps sealKWP's value. Tokens offer KWP for C_WrapKey, not
// always C_Encrypt (SoftHSM2), so the value is made a session object for
// the call.
func wrapKWP(t txn, share, aad []byte) ([]byte, error) {
	sealed := sealKWP(share, aad)
	defer clear(sealed)
	obj, err := t.c.CreateObject(t.s.h, carrierTemplate(sealed))
	if err != nil {
		return nil, called("C_CreateObject", err)
	}
	defer t.c.DestroyObject(t.s.h, obj)
	wrapped, err := t.c.WrapKey(t.s.h, kwp, t.key.h, obj)
	if err != nil {
		return nil, called("C_WrapKey", err)
	}
	if len(wrapped) != len(sealed)+kwpBlock {
		return nil, fmt.Errorf("the token returned %d bytes of AES key wrap for %d; want %d", len(wrapped), len(sealed), len(sealed)+kwpBlock)
	}
	return wrapped, nil
}

// unwrapKWP unwraps into a session object, reads and destroys it, and
// checks the binding to aad.
func unwrapKWP(t txn, body, aad []byte) ([]byte, error) {
	obj, err := t.c.UnwrapKey(t.s.h, kwp, t.key.h, body, carrierTemplate(nil))
	if err != nil {
		return nil, called("C_UnwrapKey", err)
	}
	defer t.c.DestroyObject(t.s.h, obj)
	attrs, err := t.c.GetAttributeValue(t.s.h, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		return nil, called("C_GetAttributeValue", err)
	}
	if len(attrs) != 1 {
		return nil, errors.New("the token returned no value for the unwrapped share")
	}
	sealed := attrs[0].Value
	defer clear(sealed)
	share, ok := openKWP(sealed, aad)
	if !ok {
		return nil, withKind(kmsclients.ErrInvalidCiphertext, "the unwrapped share is not bound to this DEK and index")
	}
	return share, nil
}

// selfTest round-trips a value of its own with the key and m (see judge).
func selfTest(t txn, m mechanism) error {
	probe := []byte("trousseau/pkcs11/self-test/v1")
	aad := []byte("self-test")
	var got []byte
	var err error
	switch m {
	case mechGCM:
		var body []byte
		if body, err = encryptGCM(t, probe, aad); err == nil {
			got, err = decryptGCM(t, body, aad)
		}
	case mechKWP:
		var body []byte
		if body, err = wrapKWP(t, probe, aad); err == nil {
			got, err = unwrapKWP(t, body, aad)
		}
	}
	if err == nil && !bytes.Equal(got, probe) {
		err = errors.New("the self-test's value came back changed")
	}
	return err
}
