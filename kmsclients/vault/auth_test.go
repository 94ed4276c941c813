package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// fakeLogin hands out token-1, token-2, ... after release is closed.
type fakeLogin struct {
	calls   atomic.Int32
	release chan struct{}
	fail    error
}

func (f *fakeLogin) login(ctx context.Context) (*api.SecretAuth, error) {
	n := f.calls.Add(1)
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.fail != nil {
		return nil, f.fail
	}
	return &api.SecretAuth{ClientToken: fmt.Sprintf("token-%d", n)}, nil
}

func newFakeAuth(t *testing.T, f *fakeLogin) *authenticator {
	t.Helper()
	base, err := newAPIClient(Config{Address: "http://127.0.0.1:1"}, newTransport(nil, true), 0)
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthenticator(f.login, base, base)
	t.Cleanup(a.close)
	return a
}

// TestLoginSharedByWaiters: callers that need a token while a login runs
// all get the one it returns.
func TestLoginSharedByWaiters(t *testing.T) {
	f := &fakeLogin{release: make(chan struct{})}
	a := newFakeAuth(t, f)
	var wg sync.WaitGroup
	tokens := make(chan string, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := a.session(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			tokens <- s.token
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(f.release)
	wg.Wait()
	close(tokens)
	for tok := range tokens {
		if tok != "token-1" {
			t.Fatalf("got %s, want token-1", tok)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d logins, want 1", n)
	}
}

// TestWaitEndsWithCallerDeadline: a caller stops waiting at its deadline,
// and the login it joined still serves the next caller.
func TestWaitEndsWithCallerDeadline(t *testing.T) {
	f := &fakeLogin{release: make(chan struct{})}
	a := newFakeAuth(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := a.session(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("session = %v, want the caller's deadline", err)
	}
	close(f.release)
	s, err := a.session(context.Background())
	if err != nil || s.token != "token-1" || f.calls.Load() != 1 {
		t.Fatalf("session = %v, %v after %d logins", s, err, f.calls.Load())
	}
}

// TestReplaceAfterForbidden: a 403 on a token leads to one new login;
// callers holding the old token take the new one; a 403 right after a
// forced login is reported instead of logging in again.
func TestReplaceAfterForbidden(t *testing.T) {
	f := &fakeLogin{release: make(chan struct{})}
	close(f.release)
	a := newFakeAuth(t, f)
	old, err := a.session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := a.replace(context.Background(), old)
	if err != nil || s2.token != "token-2" {
		t.Fatalf("replace = %v, %v", s2, err)
	}
	s3, err := a.replace(context.Background(), old)
	if err != nil || s3 != s2 {
		t.Fatalf("replace of the old token again = %v, %v; want the current one", s3, err)
	}
	if _, err := a.replace(context.Background(), s2); !errors.Is(err, errThrottled) {
		t.Fatalf("replace right after a forced login = %v, want errThrottled", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
}

func TestLoginFailureNotCached(t *testing.T) {
	f := &fakeLogin{release: make(chan struct{}), fail: errors.New("down")}
	close(f.release)
	a := newFakeAuth(t, f)
	for range 2 {
		if _, err := a.session(context.Background()); err == nil {
			t.Fatal("session succeeded with a failing login")
		}
	}
	if n := f.calls.Load(); n < 2 {
		t.Fatalf("%d logins; a failed login must be retried by the next caller", n)
	}
}

func TestClosedAuthenticator(t *testing.T) {
	f := &fakeLogin{release: make(chan struct{})}
	a := newFakeAuth(t, f)
	a.close()
	if _, err := a.session(context.Background()); !errors.Is(err, errClosed) {
		t.Fatalf("session after close = %v", err)
	}
}
