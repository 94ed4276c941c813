package pkcs11

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// keyIdentity names the key that wrapped a share, as an RFC 7512 URI:
//
//	pkcs11:token=trousseau;serial=c18803eb63d47f4d;object=share-key;id=%01;x-check-value=0e6b1d
//
// Every part is what the token says, not the config, so one key has one
// identity however it is found, and a new key under the label has a new
// check value, rotating the DEK. Labels are bytes, not necessarily UTF-8.
// docs/backends/pkcs11.md#key-identity-and-rotation has the rules.
type keyIdentity struct {
	token  string // the token's label
	serial string // the token's serial number
	label  string // the key's CKA_LABEL
	id     []byte // the key's own CKA_ID; may be empty
	check  []byte // CKA_CHECK_VALUE (a digest of a long one); may be empty
	unique []byte // a digest of CKA_UNIQUE_ID, when check is empty; may be empty
}

const (
	identityScheme = "pkcs11:"
	// maxCheck bounds a check value kept as is (the standard's is 3
	// bytes); longer ones, and unique IDs, are kept as digests.
	maxCheck   = 16
	uniqueSize = 8
)

// digest is a stable short stand-in for a long attribute value.
func digest(label string, b []byte, n int) []byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(b)
	return h.Sum(nil)[:n]
}

// checkValue is what an identity keeps of a key's CKA_CHECK_VALUE.
func checkValue(v []byte) []byte {
	if len(v) <= maxCheck {
		return append([]byte(nil), v...)
	}
	return digest("trousseau/pkcs11/check-value/v1\x00", v, maxCheck)
}

// uniqueValue is what an identity keeps of a key's CKA_UNIQUE_ID.
func uniqueValue(v []byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return digest("trousseau/pkcs11/unique-id/v1\x00", v, uniqueSize)
}

// String writes the identity; Config.Validate's and CK_TOKEN_INFO's
// limits keep it within [kmsclients.MaxKeyIdentitySize].
func (k keyIdentity) String() string {
	var b strings.Builder
	b.WriteString(identityScheme)
	b.WriteString("token=" + escape(k.token))
	b.WriteString(";serial=" + escape(k.serial))
	b.WriteString(";object=" + escape(k.label))
	if len(k.id) > 0 {
		b.WriteString(";id=" + escapeAll(k.id))
	}
	switch {
	case len(k.check) > 0:
		b.WriteString(";x-check-value=" + hex.EncodeToString(k.check))
	case len(k.unique) > 0:
		b.WriteString(";x-unique-id=" + hex.EncodeToString(k.unique))
	}
	return b.String()
}

// custodianKey names the key material, so one key is one custodian
// however reached: the check value alone (from the key material; a
// collision only refuses a DEK, never accepts one), else token and unique
// ID, else the whole identity.
func (k keyIdentity) custodianKey() string {
	switch {
	case len(k.check) > 0:
		return identityScheme + "x-check-value=" + hex.EncodeToString(k.check)
	case len(k.unique) > 0:
		return identityScheme + "token=" + escape(k.token) + ";serial=" + escape(k.serial) +
			";x-unique-id=" + hex.EncodeToString(k.unique)
	}
	return k.String()
}

// sameKeyAs reports whether o may name k's key material: false only when
// both have check values (or unique IDs) that differ. The token is not
// compared, so a key restored onto another token opens its shares.
func (k keyIdentity) sameKeyAs(o keyIdentity) bool {
	if len(k.check) > 0 && len(o.check) > 0 {
		return string(k.check) == string(o.check)
	}
	if len(k.unique) > 0 && len(o.unique) > 0 {
		return string(k.unique) == string(o.unique)
	}
	return true
}

// parseIdentity accepts only what String writes: a share's identity
// comes from etcd, whose writers choose it.
func parseIdentity(s string) (keyIdentity, error) {
	const maxIdentity = 512
	if len(s) > maxIdentity {
		return keyIdentity{}, fmt.Errorf("an identity of %d bytes (limit %d)", len(s), maxIdentity)
	}
	rest, ok := strings.CutPrefix(s, identityScheme)
	if !ok {
		return keyIdentity{}, fmt.Errorf("%q is not a pkcs11 key identity", s)
	}
	attrs := strings.Split(rest, ";")
	next := func(name string, optional bool) (string, bool, error) {
		if len(attrs) == 0 || !strings.HasPrefix(attrs[0], name+"=") {
			if optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%q has no %s", s, name)
		}
		v := strings.TrimPrefix(attrs[0], name+"=")
		attrs = attrs[1:]
		return v, true, nil
	}
	var k keyIdentity
	var err error
	for _, f := range []struct {
		name     string
		optional bool
		set      func(string) error
	}{
		{"token", false, func(v string) error { k.token, err = unescape(v); return err }},
		{"serial", false, func(v string) error { k.serial, err = unescape(v); return err }},
		{"object", false, func(v string) error { k.label, err = unescape(v); return err }},
		{"id", true, func(v string) error { k.id, err = unescapeAll(v); return err }},
		{"x-check-value", true, func(v string) error { k.check, err = hexValue(v, 1, maxCheck); return err }},
		{"x-unique-id", true, func(v string) error { k.unique, err = hexValue(v, uniqueSize, uniqueSize); return err }},
	} {
		v, present, err := next(f.name, f.optional)
		if err != nil {
			return keyIdentity{}, err
		}
		if present {
			if err := f.set(v); err != nil {
				return keyIdentity{}, fmt.Errorf("%q: %s: %w", s, f.name, err)
			}
		}
	}
	switch {
	case len(attrs) > 0:
		return keyIdentity{}, fmt.Errorf("%q: unexpected %q", s, attrs[0])
	case k.label == "":
		return keyIdentity{}, fmt.Errorf("%q: empty object", s)
	case len(k.check) > 0 && len(k.unique) > 0:
		return keyIdentity{}, fmt.Errorf("%q: both x-check-value and x-unique-id", s)
	case k.String() != s:
		return keyIdentity{}, fmt.Errorf("%q is not written as this backend writes identities", s)
	}
	return k, nil
}

// isUnreserved: what RFC 3986 leaves unescaped everywhere.
func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// escape percent-encodes all but unreserved bytes, UTF-8 or not.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if isUnreserved(s[i]) {
			b.WriteByte(s[i])
		} else {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
	}
	return b.String()
}

// escapeAll percent-encodes every byte, as RFC 7512 writes an id.
func escapeAll(v []byte) string {
	var b strings.Builder
	for _, c := range v {
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

var errEscape = errors.New("bad percent-encoding")

// unescape decodes escape's bytes; that the encoding is escape's own is
// parseIdentity's check.
func unescape(s string) (string, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%':
			if i+3 > len(s) {
				return "", errEscape
			}
			v, err := hex.DecodeString(s[i+1 : i+3])
			if err != nil {
				return "", errEscape
			}
			out = append(out, v[0])
			i += 2
		case isUnreserved(c):
			out = append(out, c)
		default:
			return "", errEscape
		}
	}
	return string(out), nil
}

func unescapeAll(s string) ([]byte, error) {
	if len(s) == 0 || len(s)%3 != 0 {
		return nil, errEscape
	}
	out := make([]byte, 0, len(s)/3)
	for i := 0; i < len(s); i += 3 {
		if s[i] != '%' {
			return nil, errEscape
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return nil, errEscape
		}
		out = append(out, v[0])
	}
	return out, nil
}

func hexValue(s string, min, max int) ([]byte, error) {
	v, err := hex.DecodeString(s)
	if err != nil || len(v) < min || len(v) > max {
		return nil, fmt.Errorf("want %d to %d bytes in lower-case hex", min, max)
	}
	return v, nil
}
