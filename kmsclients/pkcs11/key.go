//go:build cgo

package pkcs11

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// keyInfo is the key an operation found on the token.
type keyInfo struct {
	h                              pkcs11.ObjectHandle
	identity                       keyIdentity
	keyType                        uint
	sensitive, extractable         bool
	encrypt, decrypt, wrap, unwrap bool // CKA_ENCRYPT ... CKA_UNWRAP
}

// findKey checks the session's token is unchanged and finds the key,
// afresh for each operation: a replaced key is a new identity at once,
// and a deleted one is never used through a stale handle.
func (b *Backend) findKey(s *session) (keyInfo, error) {
	c := b.pool.m.ctx
	info, err := c.GetTokenInfo(s.slot)
	if err != nil {
		return keyInfo{}, fmt.Errorf("slot %d: %w", s.slot, called("C_GetTokenInfo", err))
	}
	if info.SerialNumber != s.serial || info.Label != s.label {
		return keyInfo{}, fmt.Errorf("slot %d: token %q (serial %s) is now %q (serial %s): %w", s.slot, s.label, s.serial, info.Label, info.SerialNumber, errTokenChanged)
	}
	h, err := b.findObject(s)
	if err != nil {
		return keyInfo{}, err
	}
	// The ID comes from the key (readAttributes), never the config, so
	// one key has one identity however found; the label matched exactly.
	k := keyInfo{h: h, identity: keyIdentity{token: s.label, serial: s.serial, label: b.keyLabel}}
	if err := b.readAttributes(s, &k); err != nil {
		return keyInfo{}, err
	}
	return k, nil
}

// findObject finds the one secret key with the label (and ID); one of
// another type is found so that usable can say so.
func (b *Backend) findObject(s *session) (pkcs11.ObjectHandle, error) {
	c := b.pool.m.ctx
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, b.keyLabel),
	}
	if len(b.keyID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, b.keyID))
	}
	if err := c.FindObjectsInit(s.h, tmpl); err != nil {
		return 0, called("C_FindObjectsInit", err)
	}
	found, _, err := c.FindObjects(s.h, 2)
	if ferr := c.FindObjectsFinal(s.h); err == nil && ferr != nil {
		return 0, called("C_FindObjectsFinal", ferr)
	}
	if err != nil {
		return 0, called("C_FindObjects", err)
	}
	switch len(found) {
	case 0:
		if err := loggedIn(c, s); err != nil {
			return 0, err // the user's private keys are hidden
		}
		return 0, &kinded{kind: kmsclients.ErrPermission, err: fmt.Errorf("%w: token %q (serial %s) has no secret key %s: create it (Trousseau never creates keys), or correct pkcs11.keyLabel and pkcs11.keyID",
			errNoKey, s.label, s.serial, b.keyName())}
	case 1:
		return found[0], nil
	}
	return 0, withKind(kmsclients.ErrPermission, "token %q (serial %s) has more than one secret key %s: give pkcs11.keyID to pick one",
		s.label, s.serial, b.keyName())
}

// loggedIn checks s is still logged in: a token that logged the
// application out (last session closed, its own timeout) hides private
// keys rather than refuse the search.
func loggedIn(c *pkcs11.Ctx, s *session) error {
	info, err := c.GetSessionInfo(s.h)
	if err != nil {
		return called("C_GetSessionInfo", err)
	}
	switch info.State {
	case pkcs11.CKS_RO_USER_FUNCTIONS, pkcs11.CKS_RW_USER_FUNCTIONS:
		return nil
	}
	return fmt.Errorf("the session was logged out: %w", &callError{fn: "C_GetSessionInfo", code: pkcs11.CKR_USER_NOT_LOGGED_IN})
}

// errNoKey marks a missing key: permission for wrap and probe, invalid
// ciphertext for unwrap (see Unwrap).
var errNoKey = errors.New("no such key")

// keyName describes the configured key for messages.
func (b *Backend) keyName() string {
	if len(b.keyID) == 0 {
		return fmt.Sprintf("labelled %q", b.keyLabel)
	}
	return fmt.Sprintf("labelled %q with ID %s", b.keyLabel, hex.EncodeToString(b.keyID))
}

// readAttributes reads the key's type, usage and CKA_ID. The check value
// and unique ID are asked apart: a token lacking one refuses the whole
// request.
func (b *Backend) readAttributes(s *session, k *keyInfo) error {
	c := b.pool.m.ctx
	attrs, err := c.GetAttributeValue(s.h, k.h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, nil),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
	})
	if err != nil {
		return called("C_GetAttributeValue", err)
	}
	k.identity.id = nil
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_KEY_TYPE:
			k.keyType = ulong(a.Value)
		case pkcs11.CKA_SENSITIVE:
			k.sensitive = isTrue(a.Value)
		case pkcs11.CKA_EXTRACTABLE:
			k.extractable = isTrue(a.Value)
		case pkcs11.CKA_ENCRYPT:
			k.encrypt = isTrue(a.Value)
		case pkcs11.CKA_DECRYPT:
			k.decrypt = isTrue(a.Value)
		case pkcs11.CKA_WRAP:
			k.wrap = isTrue(a.Value)
		case pkcs11.CKA_UNWRAP:
			k.unwrap = isTrue(a.Value)
		case pkcs11.CKA_ID:
			if len(a.Value) > 0 {
				k.identity.id = bytes.Clone(a.Value)
			}
		}
	}
	check, err := b.optionalAttribute(s, k.h, pkcs11.CKA_CHECK_VALUE)
	if err != nil {
		return err
	}
	k.identity.check = nil
	if len(check) > 0 {
		k.identity.check = checkValue(check)
		return nil
	}
	unique, err := b.optionalAttribute(s, k.h, ckaUniqueID)
	if err != nil {
		return err
	}
	k.identity.unique = uniqueValue(unique)
	return nil
}

// optionalAttribute reads an attribute, nil if the token has or tells none.
func (b *Backend) optionalAttribute(s *session, h pkcs11.ObjectHandle, typ uint) ([]byte, error) {
	attrs, err := b.pool.m.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if code, ok := codeOf(called("C_GetAttributeValue", err)); err != nil && ok &&
		(code == pkcs11.CKR_ATTRIBUTE_TYPE_INVALID || code == pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
		return nil, nil
	}
	if err != nil {
		return nil, called("C_GetAttributeValue", err)
	}
	if len(attrs) != 1 {
		return nil, nil
	}
	return attrs[0].Value, nil
}

// ulong decodes a CK_ULONG attribute, in the machine's byte order.
func ulong(v []byte) uint {
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v))
	case 4:
		return uint(binary.NativeEndian.Uint32(v))
	}
	return ^uint(0)
}

func isTrue(v []byte) bool { return len(v) == 1 && v[0] != 0 }

// usable says why the key cannot serve op with m. Wrap and probe need
// both ways and an unreadable value; unwrap needs only the way back, so
// shares stay readable whatever changed since.
func (k keyInfo) usable(op string, m mechanism) error {
	if k.keyType != pkcs11.CKK_AES {
		return withKind(kmsclients.ErrPermission, "the key %s is not an AES key (CKA_KEY_TYPE 0x%X): generate an AES key, e.g. pkcs11-tool --keygen --key-type AES:32", k.identity.label, k.keyType)
	}
	var missing []string
	need := func(ok bool, attr string) {
		if !ok {
			missing = append(missing, attr)
		}
	}
	both := op != kmsclients.OpUnwrap
	switch m {
	case mechGCM:
		need(k.decrypt, "CKA_DECRYPT")
		need(k.encrypt || !both, "CKA_ENCRYPT")
	case mechKWP:
		need(k.unwrap, "CKA_UNWRAP")
		need(k.wrap || !both, "CKA_WRAP")
	}
	if len(missing) > 0 {
		return withKind(kmsclients.ErrPermission, "the key %s has %s false, which %s needs", k.identity.label, strings.Join(missing, " and "), m)
	}
	if both && len(k.identity.id) > maxKeyID {
		// The identity would not fit; an unwrap writes none.
		return withKind(kmsclients.ErrPermission, "the key %s has a CKA_ID of %d bytes, more than the %d its key identity has room for: give it a shorter one (pkcs11-tool --set-id)", k.identity.label, len(k.identity.id), maxKeyID)
	}
	if both && !k.sensitive && k.extractable {
		return withKind(kmsclients.ErrPermission, "the key %s can be read by anyone logged in to the token (CKA_SENSITIVE false, CKA_EXTRACTABLE true): use a key that is sensitive or not extractable", k.identity.label)
	}
	return nil
}

// checkMechanism asks whether the token offers m both ways, so a probe
// can say what to configure instead.
func (b *Backend) checkMechanism(t txn, m mechanism) error {
	typ, flags := uint(pkcs11.CKM_AES_GCM), uint(pkcs11.CKF_ENCRYPT|pkcs11.CKF_DECRYPT)
	if m == mechKWP {
		typ, flags = pkcs11.CKM_AES_KEY_WRAP_PAD, pkcs11.CKF_WRAP|pkcs11.CKF_UNWRAP
	}
	info, err := t.c.GetMechanismInfo(t.s.slot, []*pkcs11.Mechanism{pkcs11.NewMechanism(typ, nil)})
	code, _ := codeOf(called("C_GetMechanismInfo", err))
	switch {
	case err == nil && info.Flags&flags == flags:
		return nil
	case err == nil, code == pkcs11.CKR_MECHANISM_INVALID:
		other := MechanismKWP
		if m == mechKWP {
			other = MechanismGCM
		}
		return withKind(kmsclients.ErrPermission, "the token does not offer %s both ways: try pkcs11.mechanism: %s", mechanismName(m), other)
	}
	return called("C_GetMechanismInfo", err)
}

func mechanismName(m mechanism) string {
	if m == mechKWP {
		return "CKM_AES_KEY_WRAP_PAD"
	}
	return "CKM_AES_GCM"
}
