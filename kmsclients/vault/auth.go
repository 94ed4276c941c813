package vault

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// loginFunc logs in once and returns the token with its lease.
type loginFunc func(ctx context.Context) (*api.SecretAuth, error)

// session is one token and a client that sends it.
type session struct {
	token  string
	client *api.Client
	// stop ends the renewal of this token once it is replaced.
	stop context.CancelFunc
}

// loginCall is a login under way; every caller that needs a token while
// it runs waits for the same one.
type loginCall struct {
	done    chan struct{}
	session *session
	err     error
}

const (
	// loginTimeout bounds a login; a caller's deadline ends only its
	// wait, as the next caller needs the login too.
	loginTimeout = 15 * time.Second
	// reloginInterval throttles logins forced by 403s: Vault answers 403
	// to a refusing policy too, where a new token does not help.
	reloginInterval = time.Second
)

// errThrottled: a 403 came soon after a forced login; report the 403.
var errThrottled = errors.New("a new token was obtained less than a second ago")

// authenticator keeps one token: it logs in in the background, renews
// with a LifetimeWatcher, logs in again before expiry or on a 403, and
// uses the old token until the new one is there.
type authenticator struct {
	login loginFunc
	// base sends requests without a token; sessions copy it.
	base *api.Client
	// renewer has a timeout of its own: renewals have no caller.
	renewer *api.Client

	ctx    context.Context // ended by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	current    *session
	inflight   *loginCall
	lastForced time.Time
}

func newAuthenticator(login loginFunc, base, renewer *api.Client) *authenticator {
	ctx, cancel := context.WithCancel(context.Background())
	a := &authenticator{login: login, base: base, renewer: renewer, ctx: ctx, cancel: cancel}
	a.mu.Lock()
	a.startLocked()
	a.mu.Unlock()
	return a
}

// session returns the current token, logging in if there is none.
func (a *authenticator) session(ctx context.Context) (*session, error) {
	a.mu.Lock()
	if s := a.current; s != nil {
		a.mu.Unlock()
		return s, nil
	}
	call := a.startLocked()
	a.mu.Unlock()
	return a.wait(ctx, call)
}

// replace returns a token newer than stale, which Vault refused: another
// caller's, or a new login's.
func (a *authenticator) replace(ctx context.Context, stale *session) (*session, error) {
	a.mu.Lock()
	if s := a.current; s != nil && s != stale {
		a.mu.Unlock()
		return s, nil
	}
	call := a.inflight
	if call == nil {
		if time.Since(a.lastForced) < reloginInterval {
			a.mu.Unlock()
			return nil, errThrottled
		}
		a.lastForced = time.Now()
		call = a.startLocked()
	}
	a.mu.Unlock()
	s, err := a.wait(ctx, call)
	if err == nil && s == stale {
		// The login returned the same token (an unchanged token file).
		return nil, errThrottled
	}
	return s, err
}

func (a *authenticator) wait(ctx context.Context, call *loginCall) (*session, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-call.done:
		return call.session, call.err
	}
}

// startLocked starts a login unless one is under way.
func (a *authenticator) startLocked() *loginCall {
	if a.inflight != nil {
		return a.inflight
	}
	call := &loginCall{done: make(chan struct{})}
	if a.ctx.Err() != nil {
		call.err = errClosed
		close(call.done)
		return call
	}
	a.inflight = call
	a.wg.Add(1)
	go a.run(call)
	return call
}

var errClosed = errors.New("backend is closed")

func (a *authenticator) run(call *loginCall) {
	defer a.wg.Done()
	ctx, cancel := context.WithTimeout(a.ctx, loginTimeout)
	auth, err := a.login(ctx)
	cancel()

	a.mu.Lock()
	defer a.mu.Unlock()
	defer close(call.done)
	a.inflight = nil
	if err != nil {
		call.err = err
		return
	}
	if old := a.current; old != nil && old.token == auth.ClientToken {
		// Same token: its renewal, if any, is already watched.
		call.session = old
		return
	}
	call.session = a.installLocked(auth)
}

// installLocked makes auth's token the current one and starts renewing it.
func (a *authenticator) installLocked(auth *api.SecretAuth) *session {
	token := auth.ClientToken
	ctx, stop := context.WithCancel(a.ctx)
	// WithRequestCallbacks copies base without its lock: safe, as base
	// never changes after New.
	s := &session{
		token:  token,
		client: a.base.WithRequestCallbacks(func(r *api.Request) { r.ClientToken = token }),
		stop:   stop,
	}
	if old := a.current; old != nil {
		old.stop()
	}
	a.current = s
	if auth.LeaseDuration > 0 {
		a.wg.Add(1)
		go a.watch(ctx, s, auth)
	}
	return s
}

// watch renews s's token while Vault allows, then logs in again; the
// watcher gives up a little before expiry, so the new login usually lands
// while the old token works.
func (a *authenticator) watch(ctx context.Context, s *session, auth *api.SecretAuth) {
	defer a.wg.Done()
	w, err := a.renewer.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: &api.Secret{Auth: auth}})
	if err != nil {
		return // a token without a lease; nothing to renew
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.RenewCh():
		case <-w.DoneCh():
			a.expiring(s)
			return
		}
	}
}

// expiring starts a login to replace s, unless s was replaced already.
func (a *authenticator) expiring(s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == s {
		a.startLocked()
	}
}

// close stops renewals and logins. Tokens expire rather than being
// revoked: Vault may be why the plugin stops.
func (a *authenticator) close() {
	a.cancel()
	a.wg.Wait()
}
