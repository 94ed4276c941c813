package envelope

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/fips140"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// officers is a test's set of officers: identities and the policy.
type officers struct {
	ids       []age.Identity
	threshold int
	list      []Officer
}

// newOfficers makes m officers, the last one with a hybrid
// (post-quantum) recipient, the others X25519.
func newOfficers(t testing.TB, k, m int) *officers {
	t.Helper()
	o := &officers{threshold: k}
	for i := range m {
		var id age.Identity
		var recipient string
		if i == m-1 {
			h, err := age.GenerateHybridIdentity()
			if err != nil {
				t.Fatal(err)
			}
			id, recipient = h, h.Recipient().String()
		} else {
			x, err := age.GenerateX25519Identity()
			if err != nil {
				t.Fatal(err)
			}
			id, recipient = x, x.Recipient().String()
		}
		o.ids = append(o.ids, id)
		o.list = append(o.list, Officer{Name: string(rune('a'+i)) + "-officer", Recipient: recipient})
	}
	return o
}

// policy makes a signing key over signers (2 of them needed) and the policy.
func (o *officers) policy(t testing.TB, signers []kmsclients.Backend) *Recovery {
	t.Helper()
	sk, err := mustNew(t, Config{Threshold: 2, Backends: signers}).MakeSigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &Recovery{Threshold: o.threshold, Officers: o.list, SigningKey: sk}
}

// sealedWithOfficers seals the test seed with 2 of 3 local backends and
// a policy of 2 of 3 officers; it returns the officers, the policy and
// what was sealed.
func sealedWithOfficers(t testing.TB) (*officers, *Recovery, Sealed) {
	t.Helper()
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	return o, rec, mustEncrypt(t, mustNew(t, Config{Threshold: 2, Backends: bs, Recovery: rec}), seed)
}

func officerKeyring(t *testing.T, rec *Recovery, ids ...age.Identity) *OfficerKeyring {
	t.Helper()
	k, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: ids, Trusted: []ed25519.PublicKey{rec.SigningKey.Public}})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOfficersRecoverWithoutAnyCustodian(t *testing.T) {
	testutil.NeedsAge(t)
	ss := wrapSwitchable(newLocals(t, 3))
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, asBackends(ss))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(ss), Recovery: rec})
	s := mustEncrypt(t, e, seed)
	h, err := ParseHeader(s.Header)
	if err != nil || h.Recovery == nil || len(h.Recovery.Shares) != 3 {
		t.Fatalf("header has no officers' branch: %v", err)
	}
	for _, b := range ss {
		b.down.Store(true)
	}
	calls := ss[0].calls.Load() + ss[1].calls.Load() + ss[2].calls.Load()

	for _, pair := range [][]int{{0, 1}, {0, 2}, {1, 2}} {
		k := officerKeyring(t, rec, o.ids[pair[0]], o.ids[pair[1]])
		pt, err := k.Decrypt(ctxT(t), s.Ciphertext, s.Header)
		if err != nil || !bytes.Equal(pt, seed) {
			t.Fatalf("officers %v: %v", pair, err)
		}
		r := k.Reports()
		if len(r) != 1 || r[0].Signature != SignatureValid || len(r[0].Opened) != 2 || r[0].KeyID != s.KeyID {
			t.Fatalf("officers %v: report %+v", pair, r)
		}
	}
	one := officerKeyring(t, rec, o.ids[2])
	if _, err := one.Decrypt(ctxT(t), s.Ciphertext, s.Header); err == nil || !strings.Contains(err.Error(), "needs 2 officers' shares, the identities given open 1") {
		t.Fatalf("one officer: %v", err)
	}
	if now := ss[0].calls.Load() + ss[1].calls.Load() + ss[2].calls.Load(); now != calls {
		t.Fatalf("custodians were asked %d times through the officers", now-calls)
	}
}

// forge builds what an etcd writer can: a header for a DEK of its choice
// whose officers' shares are sealed to the officers' public recipients,
// signed with a key of its own (or not at all), and an object under it.
func forge(t *testing.T, genuine []byte, rec *Recovery, signer ed25519.PrivateKey) (header, ciphertext []byte) {
	t.Helper()
	unsigned := signer == nil
	if unsigned {
		_, signer, _ = ed25519.GenerateKey(rand.Reader)
	}
	g, err := ParseHeader(genuine)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, dekSize)
	rand.Read(key)
	h := &Header{Threshold: g.Threshold, Generation: g.Generation + 1, Created: g.Created, Shares: g.Shares}
	rand.Read(h.DEKID[:])
	if h.Recovery, err = sealOfficers(key, h, rec, signer); err != nil {
		t.Fatal(err)
	}
	raw, err := h.seal(key, signer)
	if err != nil {
		t.Fatal(err)
	}
	if unsigned {
		body := bytes.Clone(raw[:len(raw)-ed25519.SignatureSize-commitSize])
		clear(body[len(body)-signerIDSize:])
		raw = append(body, make([]byte, ed25519.SignatureSize)...)
		raw = append(raw, commitment(key, raw)...)
		if h, err = ParseHeader(raw); err != nil {
			t.Fatal(err)
		}
	}
	return raw, planted(t, key, raw, h)
}

// planted is an object sealed under key, with header raw (parsed as h).
func planted(t *testing.T, key, raw []byte, h *Header) []byte {
	t.Helper()
	d, err := newDEK(key, raw, h)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := d.seal([]byte("planted by the attacker"))
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func TestForgedHeaderRefusedThroughOfficers(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	e := mustEncrypt(t, mustNew(t, Config{Threshold: 2, Backends: bs, Recovery: rec}), seed)
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)

	byOwnKey, ct := forge(t, e.Header, rec, attacker)
	unsigned, unsignedCT := forge(t, e.Header, rec, nil)
	// The genuine key's id with the attacker's signature.
	wrongSig := bytes.Clone(byOwnKey)
	id := SignerID(rec.SigningKey.Public)
	copy(wrongSig[len(wrongSig)-ed25519.SignatureSize-commitSize-signerIDSize:], id[:])
	// A genuine header with one officer's share replaced.
	tampered := bytes.Clone(e.Header)
	tampered[len(tampered)-ed25519.SignatureSize-commitSize-signerIDSize-5] ^= 1

	for name, c := range map[string]struct {
		raw, ct []byte
		want    Signature
	}{
		"signed by the attacker's key": {byOwnKey, ct, SignatureUnknown},
		"unsigned":                     {unsigned, unsignedCT, SignatureNone},
		"claiming the genuine key":     {wrongSig, ct, SignatureInvalid},
		"genuine, then changed":        {tampered, e.Ciphertext, SignatureInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := ParseHeader(c.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := CheckSignature(c.raw, p, []ed25519.PublicKey{rec.SigningKey.Public}); got != c.want {
				t.Fatalf("signature %s, want %s", got, c.want)
			}
			k := officerKeyring(t, rec, o.ids...)
			_, err = k.Decrypt(ctxT(t), c.ct, c.raw)
			if !errors.Is(err, ErrRefusedSignature) {
				t.Fatalf("recovery through officers opened it: %v", err)
			}
		})
	}
	// The forge itself works: only the signature stands in its way.
	k, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: o.ids, AcceptUnsigned: true})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := k.Decrypt(ctxT(t), unsignedCT, unsigned)
	if err != nil || string(pt) != "planted by the attacker" {
		t.Fatalf("with --accept-unsigned: %q, %v", pt, err)
	}
	if r := k.Reports(); r[0].Signature != SignatureNone {
		t.Fatalf("report %+v", r[0])
	}
}

func TestOfficerShareBoundToItsPlace(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	e := mustNew(t, Config{Threshold: 2, Backends: bs, Recovery: rec})
	a := mustEncrypt(t, e, seed)
	if err := e.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	b := mustEncrypt(t, e, seed)
	ha, _ := ParseHeader(a.Header)
	hb, _ := ParseHeader(b.Header)
	if _, err := OpenOfficerShare(hb, 1, ha.Recovery.Shares[0].Sealed, o.ids); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a share of another DEK opened: %v", err)
	}
	if _, err := OpenOfficerShare(ha, 2, ha.Recovery.Shares[0].Sealed, o.ids); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a share in another place opened: %v", err)
	}
	if _, err := OpenOfficerShare(ha, 1, ha.Recovery.Shares[0].Sealed, o.ids); err != nil {
		t.Fatal(err)
	}
}

func TestShareTransferToTheOperator(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	e := mustNew(t, Config{Threshold: 2, Backends: bs, Recovery: rec})
	s := mustEncrypt(t, e, seed)
	operator, _ := age.GenerateX25519Identity()

	var transfers []*ShareTransfer
	for _, i := range []int{0, 2} {
		tr, err := TransferShares("", [][]byte{s.Header, s.Header}, []age.Identity{o.ids[i]}, operator.Recipient().String())
		if err != nil {
			t.Fatal(err)
		}
		if tr.Officer != o.list[i].Name || len(tr.Shares) != 1 || tr.Shares[0].Index != i+1 {
			t.Fatalf("transfer %+v", tr)
		}
		transfers = append(transfers, tr)
	}
	k, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: []age.Identity{operator}, Trusted: []ed25519.PublicKey{rec.SigningKey.Public}, Transfers: transfers})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := k.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	if err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("through transfers: %v", err)
	}
	// A transferred share moved to another place does not count.
	transfers[1].Shares[0].Index = 2
	k, _ = NewOfficerKeyring(OfficerKeyringConfig{Identities: []age.Identity{operator}, Trusted: []ed25519.PublicKey{rec.SigningKey.Public}, Transfers: transfers})
	if _, err := k.Decrypt(ctxT(t), s.Ciphertext, s.Header); err == nil {
		t.Fatal("a share moved to another index was used")
	}
}

func TestSigningKeyFile(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	b, err := MarshalSigningKey(rec.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSigningKey("sign.json", b)
	if err != nil || !bytes.Equal(back.Public, rec.SigningKey.Public) {
		t.Fatalf("round trip: %v", err)
	}
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	if _, err := back.unlock(ctxT(t), e.open); err != nil {
		t.Fatal(err)
	}
	// A file whose public key is another's does not unlock: headers would
	// be signed by a key the packet does not hold.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	back.Public = other
	if _, err := back.unlock(ctxT(t), e.open); err == nil || !strings.Contains(err.Error(), "does not match its public key") {
		t.Fatalf("mismatched public key: %v", err)
	}
	// Its header is never a DEK to adopt (generation 0).
	h, _ := ParseHeader(rec.SigningKey.Wrapped)
	if h.Generation != 0 {
		t.Fatalf("generation %d", h.Generation)
	}
	for _, bad := range []string{`{"version":2}`, `{"version":1,"publicKey":"AAAA"}`, `nope`} {
		if _, err := ParseSigningKey("sign.json", []byte(bad)); err == nil || !strings.Contains(err.Error(), "sign.json") {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}

func TestOfficerPolicyChangeRotates(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	dir := t.TempDir()
	e := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Recovery: rec})
	if reason := e.life.configChange(); reason != "" {
		t.Fatalf("own DEK differs from config: %s", reason)
	}
	first := e.KeyID()
	changed := *rec
	changed.Officers = append([]Officer(nil), rec.Officers...)
	x, _ := age.GenerateX25519Identity()
	changed.Officers[1].Recipient = x.Recipient().String()
	for name, r := range map[string]*Recovery{"recipient changed": &changed, "branch removed": nil} {
		e2 := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Recovery: r})
		if e2.KeyID() == first {
			t.Fatalf("%s: the DEK was not replaced", name)
		}
	}
}

func TestOfficerPolicyValidation(t *testing.T) {
	testutil.NeedsAge(t)
	o := newOfficers(t, 2, 3)
	sk := &SigningKey{}
	for name, c := range map[string]struct {
		r    Recovery
		want string
	}{
		"threshold above m": {Recovery{Threshold: 4, Officers: o.list, SigningKey: sk}, "threshold 4 is larger than the number of officers 3"},
		"same name twice":   {Recovery{Threshold: 2, Officers: []Officer{o.list[0], o.list[0]}, SigningKey: sk}, "named twice"},
		"not a recipient":   {Recovery{Threshold: 1, Officers: []Officer{{Name: "x", Recipient: "ssh-ed25519 AAAA"}}, SigningKey: sk}, "recovery.officers[0].recipient (x): ssh-ed25519 ... is not an age recipient"},
		"plugin recipient":  {Recovery{Threshold: 1, Officers: []Officer{{Name: "x", Recipient: "age1yubikey1qwerty"}}, SigningKey: sk}, "age plugin recipient"},
		"no signing key":    {Recovery{Threshold: 1, Officers: o.list[:1]}, "no signing key"},
	} {
		if err := c.r.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// Two nodes with the same policy agree on one DEK as without officers;
// a header of the right shape but not signed by the nodes' key is not
// adopted, even though k custodians open it.
func TestNodesWithOfficersAdoptOnlySignedDEKs(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	o := newOfficers(t, 2, 3)
	rec := o.policy(t, bs)
	a := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir(), Recovery: rec})
	b := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir(), Recovery: rec})
	if err := a.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	s := mustEncrypt(t, a, seed)
	if _, err := b.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	waitKeyID(t, b, s.KeyID)

	// Whoever holds k custodians but not the signing key can wrap a DEK
	// that names the nodes' key; its signature does not verify.
	forged := forgeWrapped(t, b, rec)
	if _, err := b.Decrypt(ctxT(t), forged.Ciphertext, forged.Header); err != nil {
		t.Fatal(err)
	}
	stays(t, b, s.KeyID)
}

// forgeWrapped makes, with e's custodians, a DEK one generation above e's
// whose header names rec's signing key but is signed by another.
func forgeWrapped(t *testing.T, e *Envelope, rec *Recovery) Sealed {
	t.Helper()
	key := make([]byte, dekSize)
	rand.Read(key)
	h := &Header{Threshold: 2, Generation: e.Current().Generation + 1, Created: time.Now().UTC().Truncate(time.Second)}
	rand.Read(h.DEKID[:])
	shares, err := split.Split(key, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if h.Shares, err = e.life.wrapAll(ctxT(t), h, shares); err != nil {
		t.Fatal(err)
	}
	_, wrong, _ := ed25519.GenerateKey(rand.Reader)
	if h.Recovery, err = sealOfficers(key, h, rec, wrong); err != nil {
		t.Fatal(err)
	}
	h.Recovery.SignerID = SignerID(rec.SigningKey.Public)
	raw, err := h.seal(key, wrong)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDEK(key, raw, h)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := d.seal(seed)
	if err != nil {
		t.Fatal(err)
	}
	return Sealed{Ciphertext: ct, Header: raw, KeyID: d.keyID}
}

// In FIPS 140-only mode the branch is refused with a clear error instead
// of failing deep in age (whose key generation loops there).
func TestOfficersRefusedInFIPSOnlyMode(t *testing.T) {
	if !fips140.Enforced() {
		t.Skip("checks GODEBUG=fips140=only; hack/test.sh's FIPS pass runs it")
	}
	rec := &Recovery{Threshold: 1, Officers: []Officer{{Name: "ana", Recipient: "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"}}, SigningKey: &SigningKey{}}
	if _, err := New(Config{Threshold: 2, Backends: newLocals(t, 3), Recovery: rec}); !errors.Is(err, ErrFIPSOnly) {
		t.Fatalf("New with officers: %v, want ErrFIPSOnly", err)
	}
	if _, err := NewOfficerKeyring(OfficerKeyringConfig{AcceptUnsigned: true}); !errors.Is(err, ErrFIPSOnly) {
		t.Fatalf("NewOfficerKeyring: %v, want ErrFIPSOnly", err)
	}
	if _, err := TransferShares("", nil, nil, ""); !errors.Is(err, ErrFIPSOnly) {
		t.Fatalf("TransferShares: %v, want ErrFIPSOnly", err)
	}
}

// A genuine header whose signature bytes were changed (which an etcd
// writer can do) is another header that no DEK opens: it must not take
// the genuine header's place in a node's cache, or stop its adoption.
func TestChangedSignatureIsAnotherHeader(t *testing.T) {
	testutil.NeedsAge(t)
	bs := newLocals(t, 3)
	rec := newOfficers(t, 2, 3).policy(t, bs)
	a := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir(), Recovery: rec})
	b := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir(), Recovery: rec})
	if err := a.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	s := mustEncrypt(t, a, seed)
	changed := bytes.Clone(s.Header)
	changed[len(changed)-commitSize-1] ^= 1 // the signature's last byte
	if _, err := b.Decrypt(ctxT(t), s.Ciphertext, changed); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a header with a changed signature: %v, want ErrInvalid", err)
	}
	pt, err := b.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	if err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("the genuine header after the changed one: %v", err)
	}
	waitKeyID(t, b, s.KeyID)
}

// Anyone can seal a file key to the operator's public recipient under a
// DEK's public id and place: a forged transfer opens no share, and,
// given first, does not hide the genuine one.
func TestForgedTransferDoesNotHideGenuine(t *testing.T) {
	testutil.NeedsAge(t)
	o, rec, s := sealedWithOfficers(t)
	h, _ := ParseHeader(s.Header)
	operator, _ := age.GenerateX25519Identity()
	transfers := []*ShareTransfer{forgedTransfer(t, h, o.list[0].Name, 1, operator.Recipient())}
	for _, i := range []int{0, 1} {
		tr, err := TransferShares("", [][]byte{s.Header}, []age.Identity{o.ids[i]}, operator.Recipient().String())
		if err != nil {
			t.Fatal(err)
		}
		transfers = append(transfers, tr)
	}
	k, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: []age.Identity{operator}, Trusted: []ed25519.PublicKey{rec.SigningKey.Public}, Transfers: transfers})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("a forged transfer hid the genuine one: %v", err)
	}
	if rep := k.Reports(); len(rep) != 1 || len(rep[0].Opened) != 2 {
		t.Fatalf("report %+v", rep)
	}
	forgedOnly, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: []age.Identity{operator}, Trusted: []ed25519.PublicKey{rec.SigningKey.Public},
		Transfers: []*ShareTransfer{transfers[0], forgedTransfer(t, h, o.list[1].Name, 2, operator.Recipient())}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forgedOnly.Decrypt(ctxT(t), s.Ciphertext, s.Header); err == nil || !strings.Contains(err.Error(), "the identities given open 0") {
		t.Fatalf("forged transfers alone: %v", err)
	}
}

// forgedTransfer is what anyone with the operator's recipient can make:
// a file key of their own, sealed to it, for officer's share at index.
func forgedTransfer(t *testing.T, h *Header, officer string, index int, to age.Recipient) *ShareTransfer {
	t.Helper()
	sealed, err := ageSeal(bytes.Repeat([]byte{7}, fileKeySize), to)
	if err != nil {
		t.Fatal(err)
	}
	return &ShareTransfer{Version: ShareTransferVersion, Officer: officer, Shares: []TransferredShare{{DEKID: hex.EncodeToString(h.DEKID[:]), Index: index, SealedFileKey: sealed}}}
}

// A transfer of the first format, which carried shares nothing tied to
// the signed header, is refused with what to do.
func TestTransferVersion1Refused(t *testing.T) {
	testutil.NeedsAge(t)
	operator, _ := age.GenerateX25519Identity()
	_, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: []age.Identity{operator}, AcceptUnsigned: true, Transfers: []*ShareTransfer{{Version: 1, Officer: "ana"}}})
	if err == nil || !strings.Contains(err.Error(), "share transfer of ana: version 1") || !strings.Contains(err.Error(), "officer unwrap` again") {
		t.Fatalf("version 1: %v", err)
	}
}

// Officers are never asked at run time: with the signing key unlocked, a
// rotation makes exactly one wrap call per custodian, as without a
// policy, and the officers' shares are sealed locally.
func TestRotationAsksOnlyTheCustodians(t *testing.T) {
	testutil.NeedsAge(t)
	ss := wrapSwitchable(newLocals(t, 3))
	rec := newOfficers(t, 2, 3).policy(t, asBackends(ss))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(ss), Recovery: rec})
	before := ss[0].calls.Load() + ss[1].calls.Load() + ss[2].calls.Load()
	if err := e.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	if calls := ss[0].calls.Load() + ss[1].calls.Load() + ss[2].calls.Load() - before; calls != 3 {
		t.Fatalf("a rotation made %d backend calls, want 3 wraps", calls)
	}
	if h := e.Current(); h.Recovery == nil || len(h.Recovery.Shares) != 3 {
		t.Fatal("the new DEK has no officers' branch")
	}
}

// An etcd writer can store the genuine header with another commitment,
// which its signature cannot cover, with objects under a DEK of their
// own. Transfers open only the header's own shares, so such a copy opens
// nothing, even met first and with forged transfers given; once the
// genuine header opened, a copy is refused without opening any share.
func TestCopyWithAnotherCommitmentOpensNothing(t *testing.T) {
	testutil.NeedsAge(t)
	o, rec, s := sealedWithOfficers(t)
	h, _ := ParseHeader(s.Header)
	operator, _ := age.GenerateX25519Identity()
	var transfers []*ShareTransfer
	for i := range 2 {
		genuine, err := TransferShares("", [][]byte{s.Header}, []age.Identity{o.ids[i]}, operator.Recipient().String())
		if err != nil {
			t.Fatal(err)
		}
		transfers = append(transfers, forgedTransfer(t, h, o.list[i].Name, i+1, operator.Recipient()), genuine)
	}
	key := bytes.Repeat([]byte{7}, dekSize) // the attacker's
	copied := append(bytes.Clone(WithoutCommitment(s.Header)), commitment(key, WithoutCommitment(s.Header))...)
	ch, err := ParseHeader(copied)
	if err != nil {
		t.Fatal(err)
	}
	ct := planted(t, key, copied, ch)

	unwraps := &countingIdentity{Identity: operator}
	k, err := NewOfficerKeyring(OfficerKeyringConfig{Identities: []age.Identity{unwraps}, Trusted: []ed25519.PublicKey{rec.SigningKey.Public}, Transfers: transfers})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Decrypt(ctxT(t), ct, copied); !errors.Is(err, ErrInvalid) {
		t.Fatalf("the copy, met first: %q, %v", got, err)
	}
	if got, err := k.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("the genuine header after the copy: %v", err)
	}
	other := bytes.Clone(copied)
	other[len(other)-1] ^= 1
	before := unwraps.n
	if got, err := k.Decrypt(ctxT(t), ct, other); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "another commitment") {
		t.Fatalf("a copy after the genuine header: %q, %v", got, err)
	}
	if unwraps.n != before {
		t.Errorf("the copy made %d more unwraps", unwraps.n-before)
	}
}

// countingIdentity counts the age stanzas it is asked to unwrap.
type countingIdentity struct {
	age.Identity
	n int
}

func (c *countingIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	c.n++
	return c.Identity.Unwrap(stanzas)
}

// Headers that open nothing are remembered up to a bound; an etcd writer
// who plants more must not make the genuine DEK open again per object.
func TestOpenedDEKOutlivesPlantedHeaders(t *testing.T) {
	testutil.NeedsAge(t)
	o, rec, s := sealedWithOfficers(t)
	unwraps := &countingIdentity{Identity: o.ids[0]}
	k := officerKeyring(t, rec, unwraps, o.ids[1])
	for i := range maxOfficerHeaders + 1 {
		if _, err := k.Decrypt(ctxT(t), s.Ciphertext, fmt.Appendf(nil, "planted %d", i)); err == nil {
			t.Fatal("a planted header opened")
		}
	}
	first := 0
	for i := range 3 {
		if got, err := k.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
			t.Fatalf("the genuine header: %v", err)
		}
		if i == 0 {
			first = unwraps.n
		}
	}
	if first == 0 || unwraps.n != first {
		t.Errorf("the genuine header's shares were opened again: %d unwraps, %d at the first object", unwraps.n, first)
	}
}
