//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// wantErr checks err's kind and that its text says want, and holds no
// secret.
func wantErr(t testing.TB, what string, err, kind error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("%s: succeeded, want a %s error saying %q", what, kmsclients.Kind(kind), want)
	case !errors.Is(err, kind):
		t.Fatalf("%s: %v (kind %s), want kind %s", what, err, kmsclients.Kind(err), kmsclients.Kind(kind))
	case !strings.Contains(err.Error(), want):
		t.Fatalf("%s: %v, want it to say %q", what, err, want)
	case strings.Contains(err.Error(), userPIN), strings.Contains(err.Error(), "wrong-pin"):
		t.Fatalf("%s: the error %q holds a PIN", what, err)
	}
}

// idleSlot is the slot of one of b's idle sessions.
func idleSlot(t testing.TB, b *Backend) uint {
	t.Helper()
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	if len(b.pool.idle) == 0 {
		t.Fatal("no idle session")
	}
	return b.pool.idle[0].slot
}

// closeAllSessions closes every session of the application on slot, as
// a token that dropped them would: the application is logged out.
func closeAllSessions(t testing.TB, b *Backend, slot uint) {
	t.Helper()
	if err := b.pool.m.with(func(uint64) error { return b.pool.m.ctx.CloseAllSessions(slot) }); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPIN(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "pin")
	h.keygen(t, "pin", "share", "")
	cfg := h.config(t, "pin", "share")
	if err := os.WriteFile(cfg.PinFile, []byte("wrong-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := h.backend(t, "hsm", cfg)
	_, err := b.Probe(ctxFor(t))
	wantErr(t, "Probe with a wrong PIN", err, kmsclients.ErrPermission, "C_Login: CKR_PIN_INCORRECT")
	if !strings.HasPrefix(err.Error(), "pkcs11 hsm: probe: log in with the PIN in "+cfg.PinFile) {
		t.Fatalf("error %q does not name the PIN file", err)
	}
	// The same PIN is not offered to the token again.
	_, err = b.Wrap(ctxFor(t), []byte("share"), []byte("aad"))
	wantErr(t, "Wrap with the refused PIN", err, kmsclients.ErrPermission, "not trying it again")
	// The operator puts the right PIN in the file: no restart needed.
	if err := os.WriteFile(cfg.PinFile, []byte(userPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe after the PIN file was corrected: %v", err)
	}
}

func TestPINFileFaults(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "pinfile")
	h.keygen(t, "pinfile", "share", "")
	cfg := h.config(t, "pinfile", "share")
	b := h.backend(t, "hsm", cfg)
	if err := os.Chmod(cfg.PinFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := b.Probe(ctxFor(t))
	wantErr(t, "Probe with a PIN file others can read", err, kmsclients.ErrPermission, "has mode 0644; it must not be readable or writable by others (chmod 600)")
	if err := os.Rename(cfg.PinFile, cfg.PinFile+".away"); err != nil {
		t.Fatal(err)
	}
	_, err = b.Probe(ctxFor(t))
	wantErr(t, "Probe without its PIN file", err, kmsclients.ErrUnavailable, "no such file or directory")
	if err := os.Rename(cfg.PinFile+".away", cfg.PinFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.PinFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe with the PIN file mended: %v", err)
	}
}

// TestKeyDeletedThenReplaced: a deleted key is a permission error for
// probe and wrap that says what is missing, and invalid ciphertext for
// unwrap (no key on the token opens the share); another key generated
// under the same label is another identity, and shares of the old one
// are refused as invalid.
func TestKeyDeletedThenReplaced(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "keys")
	h.keygen(t, "keys", "share", "")
	b := h.backend(t, "hsm", h.config(t, "keys", "share"))
	aad := []byte("dek=1;share=1")
	_, w := mustWrap(t, b, aad)

	h.deleteKey(t, "keys", "share")
	const gone = `has no secret key labelled "share": create it (Trousseau never creates keys)`
	_, err := b.Probe(ctxFor(t))
	wantErr(t, "Probe of a deleted key", err, kmsclients.ErrPermission, gone)
	_, err = b.Wrap(ctxFor(t), []byte("share"), aad)
	wantErr(t, "Wrap with a deleted key", err, kmsclients.ErrPermission, gone)
	_, err = b.Unwrap(ctxFor(t), w, aad)
	wantErr(t, "Unwrap with a deleted key", err, kmsclients.ErrInvalidCiphertext, "is not on the token: no such key: token")

	h.keygen(t, "keys", "share", "")
	id, err := b.Probe(ctxFor(t))
	if err != nil {
		t.Fatalf("Probe of the new key: %v", err)
	}
	if id == w.KeyIdentity {
		t.Fatalf("a new key under the same label has the same identity %s", id)
	}
	old, _ := parseIdentity(w.KeyIdentity)
	now, _ := parseIdentity(id)
	if old.serial != now.serial || old.label != now.label || len(now.check) == 0 || bytes.Equal(old.check, now.check) {
		t.Fatalf("identities %s and %s differ otherwise than by the check value", w.KeyIdentity, id)
	}
	if b.CustodianKey(id) == b.CustodianKey(w.KeyIdentity) {
		t.Fatal("two keys are one custodian")
	}
	_, err = b.Unwrap(ctxFor(t), w, aad)
	wantErr(t, "Unwrap of the old key's share", err, kmsclients.ErrInvalidCiphertext, "not by the token's key")
}

func TestKeyChoice(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "choice")
	h.keygen(t, "choice", "share", "01")
	h.keygen(t, "choice", "share", "02")
	h.tool(t, "choice", "--keygen", "--key-type", "GENERIC:32", "--label", "hmac")

	_, err := h.backend(t, "both", h.config(t, "choice", "share")).Probe(ctxFor(t))
	wantErr(t, "Probe of a label two keys have", err, kmsclients.ErrPermission, `more than one secret key labelled "share": give pkcs11.keyID`)
	var ids []string
	for _, id := range []string{"01", "02"} {
		cfg := h.config(t, "choice", "share")
		cfg.KeyID = id
		got, err := h.backend(t, "key-"+id, cfg).Probe(ctxFor(t))
		if err != nil {
			t.Fatalf("Probe of key %s: %v", id, err)
		}
		if !strings.Contains(got, ";id=%"+strings.ToUpper(id)+";") {
			t.Fatalf("identity %s does not name ID %s", got, id)
		}
		ids = append(ids, got)
	}
	if ids[0] == ids[1] {
		t.Fatal("two keys have one identity")
	}
	cfg := h.config(t, "choice", "share")
	cfg.KeyID = "03"
	_, err = h.backend(t, "none", cfg).Probe(ctxFor(t))
	wantErr(t, "Probe of an ID no key has", err, kmsclients.ErrPermission, `no secret key labelled "share" with ID 03`)
	_, err = h.backend(t, "hmac", h.config(t, "choice", "hmac")).Probe(ctxFor(t))
	wantErr(t, "Probe of a generic secret", err, kmsclients.ErrPermission, "is not an AES key")
}

// TestSlotIsTheSameKey: a token named by its slot ID gives the key the
// identity it has when named by its label.
func TestSlotIsTheSameKey(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "slot")
	h.keygen(t, "slot", "share", "")
	byLabel := h.backend(t, "by-label", h.config(t, "slot", "share"))
	want, err := byLabel.Probe(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	slot := idleSlot(t, byLabel)
	cfg := h.config(t, "", "share")
	cfg.Slot = &slot
	bySlot := h.backend(t, "by-slot", cfg)
	if got, err := bySlot.Probe(ctxFor(t)); err != nil || got != want {
		t.Fatalf("by slot %d: %q, %v; want %q", slot, got, err, want)
	}
	other := slot + 1000
	cfg.Slot = &other
	_, err = h.backend(t, "no-slot", cfg).Probe(ctxFor(t))
	wantErr(t, "Probe of a slot that is not there", err, kmsclients.ErrUnavailable, fmt.Sprintf("slot %d: C_GetTokenInfo: CKR_SLOT_ID_INVALID", other))
}

// TestMechanismOfTheShare: a share opens with the mechanism that wrapped
// it, whatever the backend is configured with now.
func TestMechanismOfTheShare(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "mech")
	h.keygen(t, "mech", "share", "")
	gcm := h.backend(t, "gcm", h.config(t, "mech", "share"))
	cfg := h.config(t, "mech", "share")
	cfg.Mechanism = MechanismKWP
	kwp := h.backend(t, "kwp", cfg)
	aad := []byte("dek=9;share=3")
	for _, c := range []struct{ from, to *Backend }{{gcm, kwp}, {kwp, gcm}} {
		share, w := mustWrap(t, c.from, aad)
		if got, err := c.to.Unwrap(ctxFor(t), w, aad); err != nil || !bytes.Equal(got, share) {
			t.Fatalf("%s's share unwrapped by %s: %v", c.from.Name(), c.to.Name(), err)
		}
	}
}

// TestSessionsDropped: sessions the token closed, and a logged-out
// application, are replaced without the caller noticing.
func TestSessionsDropped(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "sessions")
	h.keygen(t, "sessions", "share", "")
	b := h.backend(t, "hsm", h.config(t, "sessions", "share"))
	aad := []byte("aad")
	share, w := mustWrap(t, b, aad)
	slot := idleSlot(t, b)

	closeAllSessions(t, b, slot)
	if got, err := b.Unwrap(ctxFor(t), w, aad); err != nil || !bytes.Equal(got, share) {
		t.Fatalf("Unwrap after the token closed every session: %v", err)
	}
	// Logged out, with the session still open.
	b.pool.mu.Lock()
	s := b.pool.idle[0]
	b.pool.mu.Unlock()
	if err := b.pool.m.with(func(uint64) error { return b.pool.m.ctx.Logout(s.h) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe after a logout: %v", err)
	}
	if got, err := b.Unwrap(ctxFor(t), w, aad); err != nil || !bytes.Equal(got, share) {
		t.Fatalf("Unwrap after a logout: %v", err)
	}
}

// TestTokenGoneAndBack: a token deleted is a backend that is down; a
// token initialised again and given the same key (restored from a
// backup) is found again without a restart, and opens the old shares.
func TestTokenGoneAndBack(t *testing.T) {
	defer func(d time.Duration) { resetInterval = d }(resetInterval)
	resetInterval = 300 * time.Millisecond
	h := newSoftHSM(t)
	key := make([]byte, 32)
	rand.Read(key)
	h.initToken(t, "restore")
	h.importKey(t, "restore", "share", "01", key)
	b := h.backend(t, "hsm", h.config(t, "restore", "share"))
	aad := []byte("dek=2;share=1")
	share, w := mustWrap(t, b, aad)

	h.deleteToken(t, "restore")
	_, err := b.Probe(ctxFor(t))
	wantErr(t, "Probe of a deleted token", err, kmsclients.ErrUnavailable, `no token labelled "restore"`)
	_, err = b.Unwrap(ctxFor(t), w, aad)
	wantErr(t, "Unwrap on a deleted token", err, kmsclients.ErrUnavailable, `no token labelled "restore"`)

	h.initToken(t, "restore")
	h.importKey(t, "restore", "share", "01", key)
	var id string
	deadline := time.Now().Add(10 * time.Second)
	for id, err = b.Probe(ctxFor(t)); err != nil; id, err = b.Probe(ctxFor(t)) {
		if time.Now().After(deadline) {
			t.Fatalf("the token initialised again is not found: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	old, _ := parseIdentity(w.KeyIdentity)
	now, _ := parseIdentity(id)
	if old.serial == now.serial || !bytes.Equal(old.check, now.check) {
		t.Fatalf("identity before %s and after %s: want another serial and the same check value", w.KeyIdentity, id)
	}
	if b.CustodianKey(id) != b.CustodianKey(w.KeyIdentity) {
		t.Fatal("the restored key is another custodian")
	}
	if got, err := b.Unwrap(ctxFor(t), w, aad); err != nil || !bytes.Equal(got, share) {
		t.Fatalf("Unwrap of a share of the restored key: %v", err)
	}
}

// TestTokenReinitialised: a token initialised again under the same
// label, with a new key, is found again at once: another identity (a
// new serial and check value).
func TestTokenReinitialised(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "reinit")
	h.keygen(t, "reinit", "share", "")
	h.initToken(t, "neighbour")
	h.keygen(t, "neighbour", "share", "")
	b := h.backend(t, "hsm", h.config(t, "reinit", "share"))
	neighbour := h.backend(t, "neighbour", h.config(t, "neighbour", "share"))
	aad := []byte("aad")
	_, w := mustWrap(t, b, aad)
	nshare, nw := mustWrap(t, neighbour, aad)
	// The neighbour keeps a full pool of idle sessions, all of which the
	// module's new initialisation leaves stale.
	var taken []*session
	for range maxSessions {
		s, err := neighbour.pool.get(ctxFor(t))
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, s)
	}
	for _, s := range taken {
		neighbour.pool.put(s, true)
	}

	h.deleteToken(t, "reinit")
	h.initToken(t, "reinit")
	h.keygen(t, "reinit", "share", "")
	id, err := b.Probe(ctxFor(t))
	if err != nil {
		t.Fatalf("Probe of the token initialised again: %v", err)
	}
	if id == w.KeyIdentity {
		t.Fatal("a new token and key have the old identity")
	}
	_, err = b.Unwrap(ctxFor(t), w, aad)
	wantErr(t, "Unwrap of a share of the old token", err, kmsclients.ErrInvalidCiphertext, "not by the token's key")
	// The module was initialised again under the other backend too.
	if got, err := neighbour.Unwrap(ctxFor(t), nw, aad); err != nil || !bytes.Equal(got, nshare) {
		t.Fatalf("the other token's backend after the module was initialised again: %v", err)
	}
}

// TestConcurrentOverThePool: many wraps and unwraps at once over a few
// sessions, while the token drops every session now and then (between
// calls). The drops are paced by calls done, not by time: on a slow
// machine a timer dropped sessions between every retry of one call.
func TestConcurrentOverThePool(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "pool")
	h.keygen(t, "pool", "share", "")
	cfg := h.config(t, "pool", "share")
	b := h.backend(t, "hsm", cfg)
	cfg.Mechanism = MechanismKWP
	kwp := h.backend(t, "hsm-kwp", cfg)
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	slot := idleSlot(t, b)

	const workers, rounds = 16, 15
	stop := make(chan struct{})
	done := make(chan struct{}, workers*rounds)
	var dropper sync.WaitGroup
	dropper.Add(1)
	go func() {
		defer dropper.Done()
		for calls := 1; ; calls++ {
			select {
			case <-stop:
				return
			case <-done:
				if calls%(2*workers) != 0 {
					continue
				}
				// Between calls: SoftHSM2 does not survive a session
				// closed under a call in progress on it.
				b.pool.m.mu.Lock()
				b.pool.m.ctx.CloseAllSessions(slot)
				b.pool.m.mu.Unlock()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			be := b
			if i%2 == 1 {
				be = kwp
			}
			for r := range rounds {
				aad := fmt.Appendf(nil, "dek=%d;share=%d", r, i)
				share := fmt.Appendf(nil, "share %d of round %d..............", i, r)
				w, err := be.Wrap(ctxFor(t), share, aad)
				if err == nil {
					var got []byte
					got, err = be.Unwrap(ctxFor(t), w, aad)
					if err == nil && !bytes.Equal(got, share) {
						err = errors.New("unwrapped another share")
					}
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", i, r, err)
				}
				done <- struct{}{}
			}
		}()
	}
	wg.Wait()
	close(stop)
	dropper.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every session given back, and never more kept than the pool allows
	// (SoftHSM2 does not count a token's sessions).
	for _, be := range []*Backend{b, kwp} {
		be.pool.mu.Lock()
		idle := len(be.pool.idle)
		be.pool.mu.Unlock()
		if len(be.pool.free) != 0 || idle > maxSessions {
			t.Fatalf("%s: %d sessions still taken, %d idle (at most %d)", be.Name(), len(be.pool.free), idle, maxSessions)
		}
	}
}

// TestDeadlineWhileTheModuleHangs: a call that does not return does not
// hold its caller past the deadline, and gives its session back when it
// ends.
func TestDeadlineWhileTheModuleHangs(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "hang")
	h.keygen(t, "hang", "share", "")
	cfg := h.config(t, "hang", "share")
	cfg.Timeout = Duration{Duration: 200 * time.Millisecond}
	b := h.backend(t, "hsm", cfg)
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	// Initialising the module again waits for every call in progress;
	// holding its lock stands for a module that does not return.
	b.pool.m.mu.Lock()
	start := time.Now()
	_, err := b.Probe(context.Background())
	wantErr(t, "Probe while the module hangs", err, kmsclients.ErrUnavailable, "did not answer within pkcs11.timeout (200ms)")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = b.Wrap(ctx, []byte("share"), []byte("aad"))
	wantErr(t, "Wrap under a deadline while the module hangs", err, context.DeadlineExceeded, "did not answer")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the calls took %s", took)
	}
	b.pool.m.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for len(b.pool.free) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still taken after the module returned", len(b.pool.free))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe after the module returned: %v", err)
	}
}

// TestOneModuleManyBackends: backends on two tokens of one module share
// it; it is finalised when the last is closed, and initialised again by
// the next backend.
func TestOneModuleManyBackends(t *testing.T) {
	h := newSoftHSM(t)
	for _, tok := range []string{"a", "b"} {
		h.initToken(t, tok)
		h.keygen(t, tok, "share", "")
	}
	a, err := New(context.Background(), "a", h.config(t, "a", "share"))
	if err != nil {
		t.Fatal(err)
	}
	b := h.backend(t, "b", h.config(t, "b", "share"))
	for _, be := range []*Backend{a, b} {
		if _, err := be.Probe(ctxFor(t)); err != nil {
			t.Fatal(err)
		}
	}
	if a.pool.m != b.pool.m {
		t.Fatal("two backends on one module loaded it twice")
	}
	a.Close()
	a.Close()
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe after another backend on the module closed: %v", err)
	}
	_, err = a.Probe(ctxFor(t))
	wantErr(t, "Probe of a closed backend", err, kmsclients.ErrUnavailable, "backend closed")
	b.Close()
	if b.pool.m.initialized {
		t.Fatal("the module is still initialised after its last backend closed")
	}
	c := h.backend(t, "c", h.config(t, "b", "share"))
	if _, err := c.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe of a backend made after the module was finalised: %v", err)
	}
}

func TestModuleThatDoesNotLoad(t *testing.T) {
	cfg := Config{TokenLabel: "t", PinFile: "/p", KeyLabel: "k"}
	dir := t.TempDir()
	notELF := dir + "/module.so"
	if err := os.WriteFile(notELF, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ module, want string }{
		{dir + "/absent.so", "pkcs11 hsm: pkcs11.module: " + dir + "/absent.so: no such file or directory"},
		{dir, "is not a regular file"},
		{notELF, "pkcs11 hsm: pkcs11.module: cannot load " + notELF + ": " + notELF + ": "},
		{libcPath(t), "not a PKCS#11 module"},
	} {
		cfg.Module = c.module
		_, err := New(context.Background(), "hsm", cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New with module %s: %v, want an error saying %q", c.module, err, c.want)
		}
	}
}

// libcPath is a shared library that is not a PKCS#11 module.
func libcPath(t *testing.T) string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib/libc.so.6", "/lib/libc.musl-x86_64.so.1"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no libc found to load")
	return ""
}

// TestKindOfReturnValues: the CKR_* values the docs list, sorted.
func TestKindOfReturnValues(t *testing.T) {
	for _, c := range []struct {
		op   string
		code uint
		want error
	}{
		{kmsclients.OpProbe, pkcs11.CKR_TOKEN_NOT_PRESENT, kmsclients.ErrUnavailable},
		{kmsclients.OpWrap, pkcs11.CKR_DEVICE_REMOVED, kmsclients.ErrUnavailable},
		{kmsclients.OpUnwrap, pkcs11.CKR_SESSION_HANDLE_INVALID, kmsclients.ErrUnavailable},
		{kmsclients.OpProbe, pkcs11.CKR_PIN_INCORRECT, kmsclients.ErrPermission},
		{kmsclients.OpProbe, pkcs11.CKR_PIN_LOCKED, kmsclients.ErrPermission},
		{kmsclients.OpWrap, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, kmsclients.ErrPermission},
		{kmsclients.OpWrap, pkcs11.CKR_MECHANISM_INVALID, kmsclients.ErrPermission},
		{kmsclients.OpUnwrap, pkcs11.CKR_ENCRYPTED_DATA_INVALID, kmsclients.ErrInvalidCiphertext},
		{kmsclients.OpUnwrap, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, kmsclients.ErrInvalidCiphertext},
		{kmsclients.OpUnwrap, pkcs11.CKR_WRAPPED_KEY_INVALID, kmsclients.ErrInvalidCiphertext},
		{kmsclients.OpUnwrap, ckrAEADDecryptFailed, kmsclients.ErrInvalidCiphertext},
		{kmsclients.OpWrap, pkcs11.CKR_DATA_LEN_RANGE, nil},
		{kmsclients.OpProbe, pkcs11.CKR_VENDOR_DEFINED + 7, nil},
	} {
		if got := kindOf(c.op, c.code); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.op, ckrName(c.code), got, c.want)
		}
	}
	for code, want := range map[uint]string{
		pkcs11.CKR_PIN_INCORRECT:      "CKR_PIN_INCORRECT",
		ckrAEADDecryptFailed:          "CKR_AEAD_DECRYPT_FAILED",
		pkcs11.CKR_VENDOR_DEFINED + 7: "CKR_VENDOR_DEFINED+0x7",
		0x7777:                        "CKR 0x00007777",
	} {
		if got := ckrName(code); got != want {
			t.Errorf("ckrName(0x%X) = %q, want %q", code, got, want)
		}
	}
}

// createKey makes a token AES key through the module, as test code may
// (the backend never does), with attributes pkcs11-tool cannot set.
func createKey(t *testing.T, b *Backend, label string, attrs ...*pkcs11.Attribute) {
	t.Helper()
	value := make([]byte, 32)
	rand.Read(value)
	createKeyValue(t, b, label, value, attrs...)
}

// TestKeyAttributes: a key that cannot serve the mechanism, or whose
// value can be read, is refused for wrapping with what to fix; shares
// stay readable as long as the key can unwrap.
func TestKeyAttributes(t *testing.T) {
	h := newSoftHSM(t)
	h.initToken(t, "attrs")
	h.keygen(t, "attrs", "share", "")
	b := h.backend(t, "hsm", h.config(t, "attrs", "share"))
	if _, err := b.Probe(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	no, yes := false, true
	createKey(t, b, "no-encrypt",
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, no), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, yes),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, yes), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, yes),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, yes))
	createKey(t, b, "readable",
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, yes), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, yes),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, no), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, no),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, no), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, yes))

	noEncrypt := h.backend(t, "no-encrypt", h.config(t, "attrs", "no-encrypt"))
	_, err := noEncrypt.Probe(ctxFor(t))
	wantErr(t, "Probe of a key without CKA_ENCRYPT", err, kmsclients.ErrPermission, "the key no-encrypt has CKA_ENCRYPT false, which aes-gcm needs")
	_, err = noEncrypt.Wrap(ctxFor(t), []byte("share"), []byte("aad"))
	wantErr(t, "Wrap with a key without CKA_ENCRYPT", err, kmsclients.ErrPermission, "CKA_ENCRYPT false")
	cfg := h.config(t, "attrs", "no-encrypt")
	cfg.Mechanism = MechanismKWP
	kwp := h.backend(t, "no-encrypt-kwp", cfg)
	if _, err := kwp.Probe(ctxFor(t)); err != nil {
		t.Fatalf("Probe of the key for key wrap: %v", err)
	}

	_, err = h.backend(t, "readable", h.config(t, "attrs", "readable")).Probe(ctxFor(t))
	wantErr(t, "Probe of a readable key", err, kmsclients.ErrPermission, "can be read by anyone logged in to the token")
	cfg = h.config(t, "attrs", "readable")
	cfg.Mechanism = MechanismKWP
	_, err = h.backend(t, "readable-kwp", cfg).Probe(ctxFor(t))
	wantErr(t, "Probe of a key without CKA_WRAP", err, kmsclients.ErrPermission, "has CKA_UNWRAP and CKA_WRAP false, which aes-key-wrap-pad needs")
}
