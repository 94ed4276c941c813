package pkcs11

import (
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

func TestIdentityRoundTrip(t *testing.T) {
	for _, k := range []keyIdentity{
		{token: "trousseau", serial: "c18803eb63d47f4d", label: "share-key", id: []byte{1}, check: []byte{0x0e, 0x6b, 0x1d}},
		{token: "My HSM;=%", serial: "", label: "clé/partage", unique: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{token: "", serial: "1", label: "k"},
	} {
		s := k.String()
		got, err := parseIdentity(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got.String() != s {
			t.Fatalf("%s parsed as %s", s, got)
		}
	}
	want := "pkcs11:token=trousseau;serial=c18803eb63d47f4d;object=share-key;id=%01;x-check-value=0e6b1d"
	if got := (keyIdentity{token: "trousseau", serial: "c18803eb63d47f4d", label: "share-key", id: []byte{1}, check: []byte{0x0e, 0x6b, 0x1d}}).String(); got != want {
		t.Fatalf("identity %s, want %s", got, want)
	}
}

// TestIdentityFitsTheLimit: the longest identity the config's limits
// allow fits kmsclients.MaxKeyIdentitySize.
func TestIdentityFitsTheLimit(t *testing.T) {
	k := keyIdentity{
		token:  strings.Repeat("\xff", maxTokenLabel),
		serial: strings.Repeat(" ", 16),
		label:  strings.Repeat("é", maxKeyLabel/2),
		id:     make([]byte, maxKeyID),
		check:  checkValue(make([]byte, 100)),
	}
	k.label = strings.Repeat(";", maxKeyLabel)
	if n := len(k.String()); n > kmsclients.MaxKeyIdentitySize {
		t.Fatalf("an identity of %d bytes, over %d", n, kmsclients.MaxKeyIdentitySize)
	}
}

func TestParseIdentityRefuses(t *testing.T) {
	for _, s := range []string{
		"",
		"local:abc",
		"pkcs11:",
		"pkcs11:token=a;serial=b",
		"pkcs11:token=a;serial=b;object=",
		"pkcs11:serial=b;token=a;object=k",
		"pkcs11:token=a;serial=b;object=k;extra=1",
		"pkcs11:token=a b;serial=b;object=k",
		"pkcs11:token=%2;serial=b;object=k",
		"pkcs11:token=%2a;serial=b;object=k",
		"pkcs11:token=%41;serial=b;object=k",
		"pkcs11:token=a;serial=b;object=k;id=01",
		"pkcs11:token=a;serial=b;object=k;id=",
		"pkcs11:token=a;serial=b;object=k;x-check-value=0E6B1D",
		"pkcs11:token=a;serial=b;object=k;x-check-value=",
		"pkcs11:token=a;serial=b;object=k;x-check-value=0e;x-unique-id=0102030405060708",
		"pkcs11:token=a;serial=b;object=k;x-unique-id=01",
		"pkcs11:token=a;serial=b;object=%ff;x-check-value=0e",
		"pkcs11:token=%F;serial=b;object=k",
		"pkcs11:token=%FG;serial=b;object=k",
		"pkcs11:token=\xff;serial=b;object=k",
		"pkcs11:token=a;serial=b;object=k;x-check-value=0e;",
	} {
		if k, err := parseIdentity(s); err == nil {
			t.Errorf("%q parsed as %+v", s, k)
		}
	}
}

func TestSameKeyAndCustodian(t *testing.T) {
	a := keyIdentity{token: "hsm-1", serial: "1", label: "share", check: []byte{1, 2, 3}}
	clone := keyIdentity{token: "hsm-2", serial: "2", label: "share", check: []byte{1, 2, 3}}
	other := keyIdentity{token: "hsm-1", serial: "1", label: "share", check: []byte{4, 5, 6}}
	unknown := keyIdentity{token: "hsm-1", serial: "1", label: "share"}
	if !a.sameKeyAs(clone) || a.sameKeyAs(other) || !a.sameKeyAs(unknown) {
		t.Fatal("sameKeyAs does not go by the check value")
	}
	if a.custodianKey() != clone.custodianKey() || a.custodianKey() == other.custodianKey() {
		t.Fatalf("custodian keys: %s, %s, %s", a.custodianKey(), clone.custodianKey(), other.custodianKey())
	}
	// The key material alone: not its label, its ID, nor its token.
	for _, same := range []keyIdentity{
		{token: "hsm-1", serial: "1", label: "share", id: []byte{1}, check: []byte{1, 2, 3}},
		{token: "hsm-3", serial: "3", label: "imported", id: []byte{9, 9}, check: []byte{1, 2, 3}},
	} {
		if same.custodianKey() != a.custodianKey() {
			t.Fatalf("one key material, custodian keys %s and %s", same.custodianKey(), a.custodianKey())
		}
	}
	if want := "pkcs11:x-check-value=010203"; a.custodianKey() != want {
		t.Fatalf("custodian key %s, want %s", a.custodianKey(), want)
	}
	if unknown.custodianKey() != unknown.String() {
		t.Fatal("without a check value, the custodian key is not the identity")
	}
	u1 := keyIdentity{token: "t", serial: "1", label: "k", unique: uniqueValue([]byte("a"))}
	u2 := keyIdentity{token: "t", serial: "1", label: "k", unique: uniqueValue([]byte("b"))}
	if u1.sameKeyAs(u2) || !u1.sameKeyAs(u1) {
		t.Fatal("sameKeyAs does not go by the unique ID")
	}
	// By its unique ID, an object of its token, whatever its label and ID.
	relabelled := u1
	relabelled.label, relabelled.id = "renamed", []byte{7}
	if u1.custodianKey() == u2.custodianKey() || u1.custodianKey() != relabelled.custodianKey() {
		t.Fatalf("custodian keys by unique ID: %s, %s, %s", u1.custodianKey(), u2.custodianKey(), relabelled.custodianKey())
	}
	onOtherToken := u1
	onOtherToken.serial = "2"
	if u1.custodianKey() == onOtherToken.custodianKey() {
		t.Fatal("objects of two tokens with one unique ID are one custodian")
	}
}

// TestIdentityAnyBytes: a token's label and serial number, and a key's
// label and ID, are bytes; whatever they hold, the identity reads back.
func TestIdentityAnyBytes(t *testing.T) {
	k := keyIdentity{token: "\xffab", serial: "\x00\x80 ;=%", label: "\xc3(", id: []byte{0, 0xff}, check: []byte{1}}
	s := k.String()
	if want := "pkcs11:token=%FFab;serial=%00%80%20%3B%3D%25;object=%C3%28;id=%00%FF;x-check-value=01"; s != want {
		t.Fatalf("identity %s, want %s", s, want)
	}
	got, err := parseIdentity(s)
	if err != nil || got.token != k.token || got.serial != k.serial || got.label != k.label || got.String() != s {
		t.Fatalf("%s read back as %+v, %v", s, got, err)
	}
}

// TestIdentitiesWrittenBefore: identities written before labels could be
// any bytes still read back as they were.
func TestIdentitiesWrittenBefore(t *testing.T) {
	for _, s := range []string{
		"pkcs11:token=trousseau;serial=c18803eb63d47f4d;object=share-key;id=%01;x-check-value=0e6b1d",
		"pkcs11:token=socket;serial=5d2b8a1c9e0f3a47;object=trousseau-share;x-check-value=037712",
		"pkcs11:token=My%20HSM%3B%3D%25;serial=;object=cl%C3%A9%2Fpartage;x-unique-id=0102030405060708",
		"pkcs11:token=;serial=1;object=k",
	} {
		k, err := parseIdentity(s)
		if err != nil || k.String() != s {
			t.Fatalf("%s: %+v, %v", s, k, err)
		}
	}
}

// FuzzParseIdentity: a key identity comes from etcd. Whatever it holds,
// the parser neither panics nor accepts what String would not write.
// And whatever bytes a token's label and serial number, and a key's
// label and ID, hold (within the limits of CK_TOKEN_INFO and the
// config), the identity String writes reads back as it was.
func FuzzParseIdentity(f *testing.F) {
	f.Add("pkcs11:token=trousseau;serial=c18803eb63d47f4d;object=share-key;id=%01;x-check-value=0e6b1d", []byte("trousseau"), []byte("c18803eb63d47f4d"), []byte("share-key"), []byte{1})
	f.Add("pkcs11:token=a%20b;serial=;object=k;x-unique-id=0102030405060708", []byte("\xffab"), []byte{}, []byte("k"), []byte{})
	f.Add("pkcs11:token=;serial=;object=%", []byte("\x00;=%"), []byte("\x80"), []byte("\xc3("), []byte{0xff})
	f.Add("", []byte{}, []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, s string, token, serial, label, id []byte) {
		if k, err := parseIdentity(s); err == nil {
			if k.String() != s {
				t.Fatalf("parsed %q as %q", s, k.String())
			}
			if len(s) > kmsclients.MaxKeyIdentitySize {
				t.Fatalf("accepted an identity of %d bytes", len(s))
			}
		}

		k := keyIdentity{
			token:  string(token[:min(len(token), maxTokenLabel)]),
			serial: string(serial[:min(len(serial), 16)]),
			label:  string(label[:min(len(label), maxKeyLabel)]),
			id:     id[:min(len(id), maxKeyID)],
			check:  checkValue([]byte(s)),
		}
		if k.label == "" {
			k.label = "k"
		}
		if len(k.id) == 0 {
			k.id = nil
		}
		w := k.String()
		got, err := parseIdentity(w)
		switch {
		case err != nil:
			t.Fatalf("%+v wrote %q, which does not read back: %v", k, w, err)
		case got.token != k.token || got.serial != k.serial || got.label != k.label || string(got.id) != string(k.id) || string(got.check) != string(k.check):
			t.Fatalf("%+v wrote %q, which reads back as %+v", k, w, got)
		case got.String() != w:
			t.Fatalf("%q reads back as %q", w, got.String())
		}
	})
}
