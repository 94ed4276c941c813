//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Backend is an AES key on a PKCS#11 token, safe for concurrent use.
type Backend struct {
	src      kmsclients.Source
	pool     *pool
	keyLabel string
	keyID    []byte
	mech     mechanism // what Wrap uses
	timeout  time.Duration

	closed    atomic.Bool
	closeOnce sync.Once

	// selfTested: when a key last passed a self-test (see judge).
	selfTestMu sync.Mutex
	selfTested map[string]time.Time
}

var (
	_ kmsclients.Backend        = (*Backend)(nil)
	_ kmsclients.CustodianKeyer = (*Backend)(nil)
)

// New loads the module but makes no call to it: a token missing at
// start is a backend that is down, not a failed start.
func New(_ context.Context, name string, cfg Config) (*Backend, error) {
	src := kmsclients.Source{Backend: "pkcs11", Name: name}
	if err := src.CheckNew(cfg); err != nil {
		return nil, err
	}
	m, err := openModule(cfg.Module)
	if err != nil {
		return nil, src.Errorf("", nil, "pkcs11.module: %w", err)
	}
	mech, _ := mechanismOf(cfg.Mechanism) // valid: CheckNew said so
	id, _ := parseKeyID(cfg.KeyID)
	return &Backend{
		src: src, pool: newPool(m, cfg), keyLabel: cfg.KeyLabel, keyID: id,
		mech: mech, timeout: cfg.Timeout.Duration,
	}, nil
}

// Name implements [kmsclients.Backend].
func (b *Backend) Name() string { return b.src.Name }

// Close closes idle sessions and releases the module; sessions of hung
// calls are closed as they end.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.pool.close()
		b.pool.m.release()
	})
	return nil
}

// CustodianKey implements [kmsclients.CustodianKeyer] (see
// keyIdentity.custodianKey).
func (b *Backend) CustodianKey(keyIdentity string) string {
	k, err := parseIdentity(keyIdentity)
	if err != nil {
		return keyIdentity
	}
	return k.custodianKey()
}

// Probe checks the key and token can use the configured mechanism and
// returns the key's identity.
func (b *Backend) Probe(ctx context.Context) (string, error) {
	var id string
	err := b.do(ctx, kmsclients.OpProbe, func(t txn) error {
		if err := t.key.usable(kmsclients.OpProbe, b.mech); err != nil {
			return err
		}
		if err := b.checkMechanism(t, b.mech); err != nil {
			return err
		}
		var err error
		id, err = writtenIdentity(t.key.identity)
		return err
	})
	return id, err
}

// Wrap encrypts share on the token, bound to aad.
func (b *Backend) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	const op = kmsclients.OpWrap
	if len(share) == 0 || len(share) > maxShareSize {
		return kmsclients.Wrapped{}, b.src.Errorf(op, nil, "share of %d bytes; want 1 to %d", len(share), maxShareSize)
	}
	var out kmsclients.Wrapped
	err := b.do(ctx, op, func(t txn) error {
		if err := t.key.usable(op, b.mech); err != nil {
			return err
		}
		var body []byte
		var err error
		if b.mech == mechKWP {
			body, err = wrapKWP(t, share, aad)
		} else {
			body, err = encryptGCM(t, share, aad)
		}
		if err != nil {
			return err
		}
		id, err := writtenIdentity(t.key.identity)
		if err != nil {
			return err
		}
		w := kmsclients.Wrapped{Ciphertext: frame(b.mech, body), KeyIdentity: id}
		if err := kmsclients.CheckWrapped(w); err != nil {
			return err
		}
		out = w
		return nil
	})
	return out, err
}

// Unwrap opens a share with the mechanism that wrapped it, once its
// identity may name the token's key (see keyIdentity.sameKeyAs).
func (b *Backend) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	const op = kmsclients.OpUnwrap
	invalid := kmsclients.ErrInvalidCiphertext
	if err := ctx.Err(); err != nil {
		return nil, b.src.Fail(ctx, op, nil, err)
	}
	m, body, err := unframe(w.Ciphertext)
	if err != nil {
		return nil, b.src.Errorf(op, invalid, "%w", err)
	}
	recorded, err := parseIdentity(w.KeyIdentity)
	if err != nil {
		return nil, b.src.Errorf(op, invalid, "share's key identity: %w", err)
	}
	var share []byte
	err = b.do(ctx, op, func(t txn) error {
		if !t.key.identity.sameKeyAs(recorded) {
			return withKind(invalid, "share was wrapped by key %s, not by the token's key %s", recorded, t.key.identity)
		}
		if err := t.key.usable(op, m); err != nil {
			return err
		}
		var err error
		if m == mechKWP {
			share, err = unwrapKWP(t, body, aad)
		} else {
			share, err = decryptGCM(t, body, aad)
		}
		if err != nil && ambiguous(err) {
			return b.judge(t, m, err)
		}
		return err
	})
	var made *kmsclients.Error
	if errors.Is(err, errNoKey) && errors.As(err, &made) && made.Kind == kmsclients.ErrPermission {
		// No key here can open it (as when another key took the label);
		// restoring the key from backup would.
		return nil, b.src.Errorf(op, invalid, "the key that wrapped this share (%s) is not on the token: %w", recorded, made.Err)
	}
	if err != nil {
		return nil, err
	}
	return share, nil
}

// writtenIdentity is k's String once parseIdentity reads it back, so no
// share is wrapped under an identity its own Unwrap would refuse.
func writtenIdentity(k keyIdentity) (string, error) {
	s := k.String()
	if _, err := parseIdentity(s); err != nil {
		return "", withKind(kmsclients.ErrPermission, "the key's identity would not read back, and its shares could not be unwrapped: %w", err)
	}
	return s, nil
}

// selfTestFresh is how long a passed self-test counts, so that forged
// shares do not each cost one.
const selfTestFresh = 30 * time.Second

// judge sorts an [ambiguous] failure: the share is at fault if the key
// passes a self-test (now or lately) or cannot be tested (unwrap-only),
// and the token still answers on the session, so a failing token is not
// taken for a bad share.
func (b *Backend) judge(t txn, m mechanism, err error) error {
	testable := t.key.encrypt
	if m == mechKWP {
		testable = t.key.wrap
	}
	what := "the key cannot be self-tested (it may only open shares), and the token answers"
	switch {
	case testable && b.testedLately(m, t.key.identity):
		what = "the key passed a self-test lately, and the token answers"
	case testable:
		serr := selfTest(t, m)
		switch {
		case serr == nil:
			b.noteSelfTest(m, t.key.identity)
			return withKind(kmsclients.ErrInvalidCiphertext, "the share does not open under the key with its associated data (%w; the key passed a self-test)", err)
		case sessionLost(serr) || tokenLost(serr):
			return serr
		}
		return err
	}
	if aerr := loggedIn(t.c, t.s); aerr != nil {
		if sessionLost(aerr) || tokenLost(aerr) {
			return aerr
		}
		return err
	}
	return withKind(kmsclients.ErrInvalidCiphertext, "the share does not open under the key with its associated data (%w; %s)", err, what)
}

func selfTestKey(m mechanism, k keyIdentity) string { return fmt.Sprintf("%d %s", m, k) }

// testedLately reports a self-test with m passed within selfTestFresh.
func (b *Backend) testedLately(m mechanism, k keyIdentity) bool {
	b.selfTestMu.Lock()
	defer b.selfTestMu.Unlock()
	at, ok := b.selfTested[selfTestKey(m, k)]
	return ok && time.Since(at) < selfTestFresh
}

// noteSelfTest records that the key passed a self-test with m now.
func (b *Backend) noteSelfTest(m mechanism, k keyIdentity) {
	b.selfTestMu.Lock()
	defer b.selfTestMu.Unlock()
	now := time.Now()
	for key, at := range b.selfTested {
		if now.Sub(at) >= selfTestFresh {
			delete(b.selfTested, key)
		}
	}
	if b.selfTested == nil {
		b.selfTested = map[string]time.Time{}
	}
	b.selfTested[selfTestKey(m, k)] = now
}

// maxAttempts: a dropped session, one after a module reset, one more.
const maxAttempts = 3

// do runs fn with a logged-in session and the key, in its own goroutine:
// a module call cannot be interrupted, so the deadline is kept by leaving
// a hung call to end, and give its session back, by itself.
func (b *Backend) do(ctx context.Context, op string, fn func(t txn) error) error {
	if err := ctx.Err(); err != nil {
		return b.src.Fail(ctx, op, nil, err)
	}
	if b.closed.Load() {
		return b.src.Errorf(op, kmsclients.ErrUnavailable, "backend closed")
	}
	callCtx, cancel := b.bound(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.attempts(callCtx, fn) }()
	select {
	case err := <-done:
		if err != nil {
			return b.fail(ctx, op, err)
		}
		return nil
	case <-callCtx.Done():
		what := "the deadline"
		if d, ok := ctx.Deadline(); ctx.Err() == nil && (!ok || time.Now().Before(d)) {
			what = fmt.Sprintf("pkcs11.timeout (%s)", b.timeout)
		}
		return b.src.Fail(ctx, op, kmsclients.ErrUnavailable, fmt.Errorf("the token did not answer within %s", what))
	}
}

// attempts runs fn, retrying on a new session after one was dropped, and
// once after a module reset when the token went away.
func (b *Backend) attempts(ctx context.Context, fn func(t txn) error) error {
	var err error
	reset := false
	for range maxAttempts {
		if b.closed.Load() {
			return withKind(kmsclients.ErrUnavailable, "backend closed")
		}
		var s *session
		if s, err = b.pool.get(ctx); err == nil {
			err = b.pool.m.with(func(gen uint64) error {
				b.pool.seen.Store(gen)
				switch {
				case gen != s.gen:
					return errStale
				case ctx.Err() != nil:
					return ctx.Err() // the caller has gone: do not start
				}
				key, err := b.findKey(s)
				if err != nil {
					return err
				}
				return fn(txn{c: b.pool.m.ctx, s: s, key: key})
			})
			b.pool.put(s, !sessionLost(err) && !tokenLost(err))
		}
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case tokenLost(err) && !reset:
			reset = true
			b.pool.drop()
			moved, rerr := b.pool.m.reset(ctx, b.pool.seen.Load())
			if rerr != nil {
				return fmt.Errorf("%w; initialising the module again: %w", err, rerr)
			}
			if !moved {
				return err
			}
		case sessionLost(err):
			if sessionsDropped(err) {
				b.pool.drop()
			}
		default:
			return err
		}
	}
	return err
}

// bound applies the configured timeout to ctx.
func (b *Backend) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.timeout > 0 {
		return context.WithTimeout(ctx, b.timeout)
	}
	return context.WithCancel(ctx)
}
