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
		"pkcs11:token=a;serial=b;object=%FF;x-check-value=0e",
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
	if unknown.custodianKey() != unknown.String() {
		t.Fatal("without a check value, the custodian key is not the identity")
	}
	u1 := keyIdentity{label: "k", unique: uniqueValue([]byte("a"))}
	u2 := keyIdentity{label: "k", unique: uniqueValue([]byte("b"))}
	if u1.sameKeyAs(u2) || !u1.sameKeyAs(u1) {
		t.Fatal("sameKeyAs does not go by the unique ID")
	}
}

// FuzzParseIdentity: a key identity comes from etcd. Whatever it holds,
// the parser neither panics nor accepts what String would not write.
func FuzzParseIdentity(f *testing.F) {
	f.Add("pkcs11:token=trousseau;serial=c18803eb63d47f4d;object=share-key;id=%01;x-check-value=0e6b1d")
	f.Add("pkcs11:token=a%20b;serial=;object=k;x-unique-id=0102030405060708")
	f.Add("pkcs11:token=;serial=;object=%")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseIdentity(s)
		if err != nil {
			return
		}
		if k.String() != s {
			t.Fatalf("parsed %q as %q", s, k.String())
		}
		if len(s) > kmsclients.MaxKeyIdentitySize {
			t.Fatalf("accepted an identity of %d bytes", len(s))
		}
	})
}
