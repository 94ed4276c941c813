//go:build cgo

package pkcs11

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// maxSessions bounds a backend's sessions: a few are plenty, as a DEK is
// unwrapped once then cached, and tokens allow few sessions.
const maxSessions = 4

// session is a logged-in session, on the token it was opened on.
type session struct {
	h      pkcs11.SessionHandle
	gen    uint64 // the module's generation it belongs to
	slot   uint
	serial string // the token's serial number when it was opened
	label  string // the token's label
}

// pool is a backend's sessions on its token, safe for concurrent use. A
// session is taken for one operation; one that may be spoilt is closed
// rather than given back.
type pool struct {
	m          *module
	tokenLabel string // the token, by label, or
	slot       *uint  // by slot ID
	pinFile    string

	free chan struct{} // one token per session that may be in use

	mu     sync.Mutex
	idle   []*session
	closed bool

	// seen is the module's generation at the last call, so that failures
	// seen together make one reset.
	seen atomic.Uint64
}

func newPool(m *module, cfg Config) *pool {
	return &pool{
		m: m, tokenLabel: cfg.TokenLabel, slot: cfg.Slot, pinFile: cfg.PinFile,
		free: make(chan struct{}, maxSessions),
	}
}

// Errors of finding the token.
var (
	errTokenNotFound = withKind(kmsclients.ErrUnavailable, "it may be inserted or initialised later")
	errTokenChanged  = withKind(kmsclients.ErrUnavailable, "the token was replaced")
	errStale         = withKind(kmsclients.ErrUnavailable, "a session of an earlier initialisation of the module")
)

// get returns an idle session or a new logged-in one, waiting within ctx
// while maxSessions are in use.
func (p *pool) get(ctx context.Context) (*session, error) {
	select {
	case p.free <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Sessions of an earlier module initialisation are dropped unclosed:
	// their handles may be others' now.
	gen := p.m.generation()
	p.mu.Lock()
	var s *session
	for len(p.idle) > 0 && s == nil {
		n := len(p.idle)
		if p.idle[n-1].gen == gen {
			s = p.idle[n-1]
		}
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := p.open(ctx)
	if err != nil {
		<-p.free
		return nil, err
	}
	return s, nil
}

// put gives s back, or, if it is not ok, closes it.
func (p *pool) put(s *session, ok bool) {
	defer func() { <-p.free }()
	p.mu.Lock()
	if ok && !p.closed {
		p.idle = append(p.idle, s)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.closeSession(s)
}

// closeSession closes s if of the current generation (an older handle
// may be another session's now). If the module is busy (a reset waiting
// on a hung call), a goroutine closes it later, so Close, put and drop
// never hang.
func (p *pool) closeSession(s *session) {
	closeIt := func() { p.m.ctx.CloseSession(s.h) }
	if !p.m.tryIfCurrent(s.gen, closeIt) {
		go p.m.ifCurrent(s.gen, closeIt)
	}
}

// drop closes every idle session, after the token went away.
func (p *pool) drop() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, s := range idle {
		p.closeSession(s)
	}
}

// close closes the idle sessions; those in use are closed when given back.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.drop()
}

// open opens a session on the token and logs it in.
func (p *pool) open(ctx context.Context) (*session, error) {
	var s *session
	err := p.m.with(func(gen uint64) error {
		p.seen.Store(gen)
		slot, info, err := p.findToken()
		if err != nil {
			return err
		}
		h, err := p.m.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			return called("C_OpenSession", err)
		}
		if err := p.login(ctx, h, info); err != nil {
			p.m.ctx.CloseSession(h)
			return err
		}
		s = &session{h: h, gen: gen, slot: slot, serial: info.SerialNumber, label: info.Label}
		return nil
	})
	return s, err
}

// findToken finds the token by slot ID, or the one with the label.
func (p *pool) findToken() (uint, pkcs11.TokenInfo, error) {
	c := p.m.ctx
	if p.slot != nil {
		info, err := c.GetTokenInfo(*p.slot)
		if err != nil {
			return 0, info, fmt.Errorf("slot %d: %w", *p.slot, called("C_GetTokenInfo", err))
		}
		return *p.slot, info, nil
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, called("C_GetSlotList", err)
	}
	var found []uint
	var info pkcs11.TokenInfo
	for _, slot := range slots {
		ti, err := c.GetTokenInfo(slot)
		if err != nil || ti.Label != p.tokenLabel {
			continue // a token going away is not the one looked for
		}
		found = append(found, slot)
		info = ti
	}
	switch len(found) {
	case 0:
		return 0, info, fmt.Errorf("no token labelled %q among the module's %d tokens (%w)", p.tokenLabel, len(slots), errTokenNotFound)
	case 1:
		return found[0], info, nil
	}
	return 0, info, withKind(kmsclients.ErrPermission, "%d tokens are labelled %q (slots %v): name the token by pkcs11.slot", len(found), p.tokenLabel, found)
}

// login logs h in as the user with the PIN file's PIN, through the
// token's [loginGate].
func (p *pool) login(ctx context.Context, h pkcs11.SessionHandle, info pkcs11.TokenInfo) error {
	pin, err := readPIN(p.pinFile)
	if err != nil {
		return withKind(pinFileKind(err), "%w", err)
	}
	defer clear(pin)
	g := p.m.loginGate(info.SerialNumber, info.Label)
	if err := g.enter(ctx); err != nil {
		return err
	}
	defer g.leave()
	sum := g.digest(pin)
	if g.isRefused(sum) {
		return withKind(kmsclients.ErrPermission, "the token refused the PIN in %s (CKR_PIN_INCORRECT) and the file still holds it: not trying it again, which would count toward locking the PIN", p.pinFile)
	}
	err = p.m.ctx.Login(h, pkcs11.CKU_USER, string(pin))
	code, _ := codeOf(called("C_Login", err))
	switch {
	case err == nil, code == pkcs11.CKR_USER_ALREADY_LOGGED_IN:
		// Login is per token and application: another session did it.
		return nil
	case code == pkcs11.CKR_PIN_INCORRECT || code == pkcs11.CKR_PIN_INVALID || code == pkcs11.CKR_PIN_LEN_RANGE:
		g.refuse(sum)
	}
	return fmt.Errorf("log in with the PIN in %s: %w", p.pinFile, called("C_Login", err))
}

// loginGate serialises the process's logins to one token (module,
// serial, label) and remembers the PINs it refused: each wrong try counts
// toward locking the PIN, and concurrent logins would each offer a wrong
// PIN before any saw the refusal.
type loginGate struct {
	turn chan struct{} // holds a value while a login is tried
	salt []byte        // keys the digests of refused PINs
	// refused: keyed digests, newest last; used with turn held.
	refused [][]byte
}

// maxRefused is per gate, so that several wrong PIN files each count.
const maxRefused = 16

// loginGate returns the gate of the token of serial and label.
func (m *module) loginGate(serial, label string) *loginGate {
	m.loginsMu.Lock()
	defer m.loginsMu.Unlock()
	key := serial + "\x00" + label
	if g, ok := m.logins[key]; ok {
		return g
	}
	salt := make([]byte, 32)
	rand.Read(salt)
	g := &loginGate{turn: make(chan struct{}, 1), salt: salt}
	if m.logins == nil {
		m.logins = map[string]*loginGate{}
	}
	m.logins[key] = g
	return g
}

// enter waits for the gate's turn within ctx.
func (g *loginGate) enter(ctx context.Context) error {
	select {
	case g.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *loginGate) leave() { <-g.turn }

// digest is keyed by a process secret, so no PIN is kept in memory.
func (g *loginGate) digest(pin []byte) []byte {
	mac := hmac.New(sha256.New, g.salt)
	mac.Write(pin)
	return mac.Sum(nil)
}

func (g *loginGate) isRefused(sum []byte) bool {
	for _, r := range g.refused {
		if hmac.Equal(r, sum) {
			return true
		}
	}
	return false
}

func (g *loginGate) refuse(sum []byte) {
	if g.isRefused(sum) {
		return
	}
	if len(g.refused) == maxRefused {
		g.refused = append(g.refused[:0], g.refused[1:]...)
	}
	g.refused = append(g.refused, sum)
}

// pinFileKind sorts a PIN file's fault as local sorts a key file's: a
// missing one (not mounted yet) may mend itself, the rest needs an operator.
func pinFileKind(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return kmsclients.ErrUnavailable
	}
	return kmsclients.ErrPermission
}
