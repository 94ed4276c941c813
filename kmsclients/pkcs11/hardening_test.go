//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/plugintest"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// spyModules are where distributions put OpenSC's pkcs11-spy, which
// logs every call and passes it on to another module.
var spyModules = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
	"/usr/lib/aarch64-linux-gnu/pkcs11-spy.so",
	"/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
	"/usr/lib/aarch64-linux-gnu/pkcs11/pkcs11-spy.so",
	"/usr/lib64/pkcs11-spy.so",
	"/usr/lib64/pkcs11/pkcs11-spy.so",
	"/usr/lib/pkcs11-spy.so",
	"/usr/lib/pkcs11/pkcs11-spy.so",
	"/usr/local/lib/pkcs11-spy.so",
}

// spy is pkcs11-spy in front of the test's SoftHSM2, to count calls.
type spy struct {
	module string // give it as Config.Module
	log    string
}

// newSpy copies pkcs11-spy to a path of the test's own: modules are never
// unloaded, so only another file reads PKCS11SPY_OUTPUT afresh.
func (h *softhsm) newSpy(t *testing.T) *spy {
	t.Helper()
	var from string
	for _, p := range spyModules {
		if _, err := os.Stat(p); err == nil {
			from = p
			break
		}
	}
	if from == "" {
		t.Fatal("OpenSC's pkcs11-spy.so is not installed (Debian and Ubuntu: apt-get install opensc-pkcs11): the test counts calls into the module with it")
	}
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	module := filepath.Join(t.TempDir(), "pkcs11-spy.so")
	dst, err := os.OpenFile(module, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	s := &spy{module: module, log: filepath.Join(h.dir, "spy.log")}
	t.Setenv("PKCS11SPY", h.module)
	t.Setenv("PKCS11SPY_OUTPUT", s.log)
	return s
}

var spyCall = regexp.MustCompile(`(?m)^[0-9]+: (C_[A-Za-z]+)$`)

// calls counts the calls to fn that the spy logged so far.
func (s *spy) calls(t *testing.T, fn string) int {
	t.Helper()
	data, err := os.ReadFile(s.log)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range spyCall.FindAllStringSubmatch(string(data), -1) {
		if m[1] == fn {
			n++
		}
	}
	return n
}

// TestOneKeyIsOneCustodian: one key reached by two configs, or its
// material on another token under another label and ID, is one
// custodian, and a plugin giving it two shares refuses to make a DEK.
func TestOneKeyIsOneCustodian(t *testing.T) {
	h := newSoftHSM(t)
	key := make([]byte, 32)
	rand.Read(key)
	h.initToken(t, "custody")
	h.importKey(t, "custody", "share", "01", key)
	h.initToken(t, "elsewhere")
	h.importKey(t, "elsewhere", "copy", "02", key)
	h.keygen(t, "elsewhere", "other", "03")

	byLabel := h.backend(t, "by-label", h.config(t, "custody", "share"))
	cfg := h.config(t, "custody", "share")
	cfg.KeyID = "01"
	byID := h.backend(t, "by-id", cfg)
	copied := h.backend(t, "copy", h.config(t, "elsewhere", "copy"))
	other := h.backend(t, "other", h.config(t, "elsewhere", "other"))
	ids := map[*Backend]string{}
	for _, b := range []*Backend{byLabel, byID, copied, other} {
		id, err := b.Probe(ctxFor(t))
		if err != nil {
			t.Fatalf("Probe %s: %v", b.Name(), err)
		}
		ids[b] = id
	}
	if ids[byLabel] != ids[byID] || !strings.Contains(ids[byLabel], ";object=share;id=%01;x-check-value=") {
		t.Fatalf("one key, two identities: %s (keyLabel) and %s (keyLabel and keyID)", ids[byLabel], ids[byID])
	}
	custodian := byLabel.CustodianKey(ids[byLabel])
	for _, b := range []*Backend{byID, copied} {
		if got := b.CustodianKey(ids[b]); got != custodian {
			t.Fatalf("one key material, two custodians: %s (%s) and %s (%s)", custodian, ids[byLabel], got, ids[b])
		}
	}
	if other.CustodianKey(ids[other]) == custodian {
		t.Fatal("two keys are one custodian")
	}

	for _, pair := range [][2]*Backend{{byLabel, byID}, {byLabel, copied}} {
		env, err := envelope.New(envelope.Config{Threshold: 2, Backends: []kmsclients.Backend{pair[0], pair[1], plugintest.LocalBackend(t, "file")}})
		if err != nil {
			t.Fatal(err)
		}
		err = env.Prepare(ctxFor(t))
		if err == nil || !strings.Contains(err.Error(), "wrap with the same key") {
			t.Fatalf("a DEK over %s and %s (one HSM key) and a key file: %v, want a refusal", pair[0].Name(), pair[1].Name(), err)
		}
	}
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: []kmsclients.Backend{byLabel, other, plugintest.LocalBackend(t, "file")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Prepare(ctxFor(t)); err != nil {
		t.Fatalf("a DEK over two HSM keys and a key file: %v", err)
	}
}

// TestKeyIDTooLong: a key whose own CKA_ID would not fit its identity is
// refused for wrapping, with what to do.
func TestKeyIDTooLong(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "long-id")
	h.keygen(t, "long-id", "setup", "")
	setup := h.backend(t, "setup", h.config(t, "long-id", "setup"))
	if _, err := setup.Probe(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 32)
	rand.Read(value)
	yes := true
	createKeyValue(t, setup, "share", value, pkcs11.NewAttribute(pkcs11.CKA_ID, bytes.Repeat([]byte{7}, maxKeyID+1)),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, yes), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, yes),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, yes))
	b := h.backend(t, "hsm", h.config(t, "long-id", "share"))
	_, err := b.Probe(ctxFor(t))
	wantErr(t, "Probe of a key with a CKA_ID of 33 bytes", err, kmsclients.ErrPermission, "has a CKA_ID of 33 bytes, more than the 32 its key identity has room for")
}

// TestWrittenIdentityReadsBack: an identity that would not read back is
// never reported nor recorded.
func TestWrittenIdentityReadsBack(t *testing.T) {
	k := keyIdentity{token: "t", serial: "1", label: "share", id: []byte{1}, check: []byte{1, 2, 3}}
	if s, err := writtenIdentity(k); err != nil || s != k.String() {
		t.Fatalf("writtenIdentity: %q, %v", s, err)
	}
	k.label = strings.Repeat(";", maxKeyLabel)
	k.token = strings.Repeat("\xff", maxTokenLabel)
	k.id = make([]byte, 3*maxKeyID)
	_, err := writtenIdentity(k)
	wantErr(t, "an identity over the limit", err, kmsclients.ErrPermission, "would not read back")
}

// TestWrongPINTriedOnce: a wrong PIN costs one C_Login however many
// operations and backends of the token want a session at once.
func TestWrongPINTriedOnce(t *testing.T) {
	h := newSoftHSM(t)
	sp := h.newSpy(t)
	h.initToken(t, "once")
	h.keygen(t, "once", "share", "")
	var backends []*Backend
	for i := range 3 {
		cfg := h.config(t, "once", "share")
		cfg.Module = sp.module
		if err := os.WriteFile(cfg.PinFile, []byte("wrong-pin\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		backends = append(backends, h.backend(t, fmt.Sprintf("hsm-%d", i), cfg))
	}
	probeAll := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 8*len(backends))
		for _, b := range backends {
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := b.Probe(ctxFor(t))
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, kmsclients.ErrPermission) {
				t.Fatalf("Probe with a wrong PIN: %v, want a permission error", err)
			}
		}
	}
	probeAll()
	if n := sp.calls(t, "C_Login"); n != 1 {
		t.Fatalf("24 probes over 3 backends with one wrong PIN made %d calls to C_Login, want 1", n)
	}
	probeAll()
	if n := sp.calls(t, "C_Login"); n != 1 {
		t.Fatalf("the refused PIN was tried again: %d calls to C_Login", n)
	}
	// Another wrong PIN is another try, once; the first stays refused.
	cfg := h.config(t, "once", "share")
	cfg.Module = sp.module
	if err := os.WriteFile(cfg.PinFile, []byte("wrong-pin-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backends = append(backends, h.backend(t, "hsm-other-pin", cfg))
	probeAll()
	if n := sp.calls(t, "C_Login"); n != 2 {
		t.Fatalf("a second wrong PIN: %d calls to C_Login in all, want 2", n)
	}
	// The PIN put right in one file: that backend logs in.
	if err := os.WriteFile(backends[0].pool.pinFile, []byte(userPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := backends[0].Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe with the PIN put right: %v", err)
	}
}

// TestCloseWhileACallHangs: a hung call (the test holds the read lock)
// neither makes a reset block the module's other backends nor Close
// hang, with or without a reset waiting.
func TestCloseWhileACallHangs(t *testing.T) {
	h := newSoftHSM(t)
	for _, tok := range []string{"gone", "stays", "closes"} {
		h.initToken(t, tok)
		h.keygen(t, tok, "share", "")
	}
	cfg := h.config(t, "gone", "share")
	cfg.Timeout = Duration{Duration: 300 * time.Millisecond}
	gone := h.backend(t, "gone", cfg)
	cfg = h.config(t, "stays", "share")
	cfg.Timeout = Duration{Duration: 2 * time.Second}
	stays := h.backend(t, "stays", cfg)
	closes := h.backend(t, "closes", h.config(t, "closes", "share"))
	closes2 := h.backend(t, "closes-2", h.config(t, "closes", "share"))
	for _, b := range []*Backend{gone, stays, closes, closes2} {
		if _, err := b.Probe(ctxFor(t)); err != nil {
			t.Fatal(err)
		}
	}
	m := gone.pool.m
	m.mu.RLock() // a call that hangs
	var once sync.Once
	unhang := func() { once.Do(m.mu.RUnlock) }
	t.Cleanup(unhang) // before the backends are closed

	// The token goes: the reset it asks for is held up by the hung call.
	h.deleteToken(t, "gone")
	if _, err := gone.Probe(ctxFor(t)); !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Fatalf("Probe of a deleted token while a call hangs: %v, want unavailable", err)
	}
	time.Sleep(100 * time.Millisecond)
	// The other backends on the module still work...
	if _, err := stays.Probe(ctxFor(t)); err != nil {
		t.Errorf("Probe of another token while a call hangs and the module waits to be reset: %v", err)
	}
	// ... and close.
	closed := make(chan struct{})
	go func() {
		closes.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Error("Close hangs while a call hangs and the module waits to be reset")
	}

	// Nor does a writer waiting for the lock (a reset, a release).
	writer := make(chan struct{})
	go func() {
		m.mu.Lock()
		m.mu.Unlock()
		close(writer)
	}()
	time.Sleep(50 * time.Millisecond)
	closed2 := make(chan struct{})
	go func() {
		closes2.Close()
		close(closed2)
	}()
	select {
	case <-closed2:
	case <-time.After(2 * time.Second):
		t.Error("Close hangs while a writer waits for a hung call")
	}
	unhang()
	<-writer
	if _, err := stays.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe after the call returned: %v", err)
	}
}

// reassigned is the slot softhsm2-util gave a token it initialised.
var reassigned = regexp.MustCompile(`reassigned to slot ([0-9]+)`)

// TestTokenLabelNotUTF8: a token whose label is not UTF-8 (named by its
// slot) has an identity that reads back, and its shares open.
func TestTokenLabelNotUTF8(t *testing.T) {
	h := newSoftHSM(t)
	const label = "\xffab"
	out := h.run(t, "softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", userPIN)
	m := reassigned.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("softhsm2-util did not say the token's slot: %s", out)
	}
	var slot uint
	fmt.Sscan(m[1], &slot)
	h.run(t, "pkcs11-tool", "--module", h.module, "--slot", m[1], "--login", "--pin", userPIN,
		"--keygen", "--key-type", "AES:32", "--label", "share", "--private", "--sensitive")
	cfg := h.config(t, "", "share")
	cfg.Slot = &slot
	b := h.backend(t, "hsm", cfg)
	id, err := b.Probe(ctxFor(t))
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if !strings.HasPrefix(id, "pkcs11:token=%FFab;") {
		t.Fatalf("identity %s", id)
	}
	if k, err := parseIdentity(id); err != nil || k.token != label {
		t.Fatalf("the identity %s does not read back: %+v, %v", id, k, err)
	}
	aad := []byte("dek=1;share=1")
	share, w := mustWrap(t, b, aad)
	if got, err := b.Unwrap(ctxFor(t), w, aad); err != nil || !bytes.Equal(got, share) {
		t.Fatalf("Unwrap of a share of a token labelled %q: %v", label, err)
	}
}

// createKeyValue makes an AES key of value, with attributes pkcs11-tool
// cannot set.
func createKeyValue(t *testing.T, b *Backend, label string, value []byte, attrs ...*pkcs11.Attribute) {
	t.Helper()
	tmpl := append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}, attrs...)
	err := b.pool.m.with(func(uint64) error {
		slot, _, err := b.pool.findToken()
		if err != nil {
			return err
		}
		c := b.pool.m.ctx
		s, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer c.CloseSession(s)
		if err := c.Login(s, pkcs11.CKU_USER, userPIN); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			return err
		}
		_, err = c.CreateObject(s, tmpl)
		return err
	})
	if err != nil {
		t.Fatalf("create key %s: %v", label, err)
	}
}

// forge flips a bit of the wrapped share's ciphertext.
func forge(w kmsclients.Wrapped) kmsclients.Wrapped {
	w.Ciphertext = bytes.Clone(w.Ciphertext)
	w.Ciphertext[len(w.Ciphertext)-1] ^= 1
	return w
}

// oneWayKeys makes two keys of one value on the spy's token: one both
// ways, one that may only open shares.
func oneWayKeys(t *testing.T) (h *softhsm, sp *spy, config func(label, mech string) Config) {
	h = newSoftHSM(t)
	sp = h.newSpy(t)
	h.initToken(t, "oneway")
	h.keygen(t, "oneway", "setup", "")
	config = func(label, mech string) Config {
		c := h.config(t, "oneway", label)
		c.Module, c.Mechanism = sp.module, mech
		return c
	}
	setup := h.backend(t, "setup", config("setup", ""))
	if _, err := setup.Probe(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 32)
	rand.Read(value)
	no, yes := false, true
	createKeyValue(t, setup, "both-ways", value,
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, yes), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, yes),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, yes), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, yes),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, yes))
	createKeyValue(t, setup, "open-only", value,
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, no), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, yes),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, no), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, yes),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, yes))
	return h, sp, config
}

// TestForgedShareOnAnOpenOnlyKey: a forged share under a key that cannot
// be self-tested is still invalid ciphertext, not a token failure.
func TestForgedShareOnAnOpenOnlyKey(t *testing.T) {
	h, _, config := oneWayKeys(t)
	aad := []byte("dek=5;share=2")
	for _, mech := range []string{MechanismGCM, MechanismKWP} {
		both := h.backend(t, "both-"+mech, config("both-ways", mech))
		openOnly := h.backend(t, "open-only-"+mech, config("open-only", mech))
		share, w := mustWrap(t, both, aad)
		if got, err := openOnly.Unwrap(ctxFor(t), w, aad); err != nil || !bytes.Equal(got, share) {
			t.Fatalf("%s: Unwrap with the open-only key: %v", mech, err)
		}
		_, err := openOnly.Unwrap(ctxFor(t), forge(w), aad)
		wantErr(t, mech+": Unwrap of a forged share with the open-only key", err, kmsclients.ErrInvalidCiphertext, "the key cannot be self-tested")
	}
}

// TestForgedSharesOneSelfTest: forged shares under a key that can be
// self-tested have it self-tested once, not once each.
func TestForgedSharesOneSelfTest(t *testing.T) {
	h, sp, config := oneWayKeys(t)
	aad := []byte("dek=5;share=2")
	both := h.backend(t, "both", config("both-ways", MechanismGCM))
	_, w := mustWrap(t, both, aad)
	// A self-test is an encryption: C_EncryptInit, then C_Encrypt (which
	// the binding calls twice, for the length, then the value).
	before := sp.calls(t, "C_EncryptInit")
	for range 5 {
		_, err := both.Unwrap(ctxFor(t), forge(w), aad)
		wantErr(t, "Unwrap of a forged share", err, kmsclients.ErrInvalidCiphertext, "the share does not open under the key")
	}
	if n := sp.calls(t, "C_EncryptInit") - before; n != 1 {
		t.Fatalf("5 forged shares made %d self-tests, want 1", n)
	}
}
