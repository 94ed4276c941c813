package awskms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

func TestConformance(t *testing.T) {
	srv := startLocalKMS(t)
	kmstest.Run(t, kmstest.Harness{
		BackendKind: "awskms",
		New: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, "aws-one", srv.Endpoint(), Config{KeyID: key1ARN})
		},
		OtherKey: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, "aws-two", srv.Endpoint(), Config{KeyID: key2ARN})
		},
		// New succeeds with nothing listening: a backend may be down at start.
		Unavailable: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, "aws-down", fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t)), Config{KeyID: key1ARN})
		},
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// mustWrap wraps a fresh share and returns it with its wrapped form.
func mustWrap(t *testing.T, b *Backend, aad []byte) ([]byte, kmsclients.Wrapped) {
	t.Helper()
	share := []byte("a 33-byte share of some DEK, ok?!")
	w, err := b.Wrap(ctxFor(t, 10*time.Second), share, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return share, w
}

func TestEncryptionContextMismatch(t *testing.T) {
	srv := startLocalKMS(t)
	prod := newTestBackend(t, "aws-prod", srv.Endpoint(), Config{KeyID: key1ARN, EncryptionContext: map[string]string{"cluster": "prod"}})
	aad := []byte("dek=1;share=1")
	share, w := mustWrap(t, prod, aad)
	kmstest.MustUnwrap(t, prod, w, aad, share)
	for name, ec := range map[string]map[string]string{
		"other value": {"cluster": "staging"},
		"none":        nil,
		"extra entry": {"cluster": "prod", "team": "x"},
	} {
		t.Run(name, func(t *testing.T) {
			other := newTestBackend(t, "aws-other", srv.Endpoint(), Config{KeyID: key1ARN, EncryptionContext: ec})
			_, err := other.Unwrap(ctxFor(t, 10*time.Second), w, aad)
			kmstest.WantKind(t, "Unwrap with another encryption context", err, kmsclients.ErrInvalidCiphertext)
		})
	}
}

func TestAliasResolution(t *testing.T) {
	srv := startLocalKMS(t)
	for name, cfg := range map[string]Config{
		"alias ARN":  {KeyID: aliasARN},
		"alias name": {KeyID: aliasName, Region: testRegion},
		"key ID":     {KeyID: key1ID, Region: testRegion},
	} {
		t.Run(name, func(t *testing.T) {
			b := newTestBackend(t, "aws-alias", srv.Endpoint(), cfg)
			aad := []byte("dek=2;share=1")
			share, w := mustWrap(t, b, aad)
			if w.KeyIdentity != key1ARN {
				t.Fatalf("Wrap reports key %q, want the alias target %q", w.KeyIdentity, key1ARN)
			}
			id, err := b.Probe(ctxFor(t, 10*time.Second))
			if err != nil || id != key1ARN {
				t.Fatalf("Probe = %q, %v; want %q", id, err, key1ARN)
			}
			kmstest.MustUnwrap(t, b, w, aad, share)
			// A share that claims key 2 is refused: by the backend when
			// keyID names key 1, by KMS (Decrypt pinned to key 2) when
			// keyID is an alias, which may own key 2.
			w.KeyIdentity = key2ARN
			_, err = b.Unwrap(ctxFor(t, 10*time.Second), w, aad)
			kmstest.WantKind(t, "Unwrap pinned to another key", err, kmsclients.ErrInvalidCiphertext)
		})
	}
}

// TestForeignAccountRefused: with keyID an alias name or a bare key ID,
// a share whose key identity names a key of another account is refused
// before any Decrypt, whether or not the backend had used KMS before.
func TestForeignAccountRefused(t *testing.T) {
	srv := startLocalKMS(t)
	calls := &callLog{}
	endpoint := serve(t, calls.proxy(t, srv.Endpoint()))
	aad := []byte("dek=7;share=1")
	for name, cfg := range map[string]Config{
		"alias name": {KeyID: aliasName, Region: testRegion},
		"key ID":     {KeyID: key1ID, Region: testRegion},
	} {
		t.Run(name, func(t *testing.T) {
			warm := newTestBackend(t, "aws-warm", endpoint, cfg)
			share, w := mustWrap(t, warm, aad)
			foreign := w
			foreign.KeyIdentity = foreignKeyARN
			cold := newTestBackend(t, "aws-cold", endpoint, cfg)
			for what, b := range map[string]*Backend{"after a Wrap": warm, "as first call": cold} {
				before := calls.count("TrentService.Decrypt")
				_, err := b.Unwrap(ctxFor(t, 10*time.Second), foreign, aad)
				kmstest.WantKind(t, "Unwrap "+what+" of a share naming account 999999999999", err, kmsclients.ErrInvalidCiphertext)
				if n := calls.count("TrentService.Decrypt") - before; n != 0 {
					t.Fatalf("Unwrap %s sent %d Decrypts for another account's key", what, n)
				}
				kmstest.MustUnwrap(t, b, w, aad, share)
			}
			if calls.count("TrentService.Decrypt") == 0 {
				t.Fatal("the proxy saw no Decrypt at all: it does not see the backend's calls")
			}
		})
	}
}

// callLog counts the KMS operations (X-Amz-Target) that pass a proxy.
type callLog struct {
	mu      sync.Mutex
	targets map[string]int
}

func (c *callLog) proxy(t *testing.T, target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	next := httputil.NewSingleHostReverseProxy(u)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		if c.targets == nil {
			c.targets = map[string]int{}
		}
		c.targets[r.Header.Get("X-Amz-Target")]++
		c.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (c *callLog) count(target string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.targets[target]
}

// TestAliasRepointed: the identity follows the alias, and shares wrapped
// before the move still unwrap under their old key, whether keyID names
// the alias by ARN or by name alone.
func TestAliasRepointed(t *testing.T) {
	for name, cfg := range map[string]Config{
		"alias ARN":  {KeyID: aliasARN},
		"alias name": {KeyID: aliasName, Region: testRegion},
	} {
		t.Run(name, func(t *testing.T) {
			srv := startLocalKMS(t)
			b := newTestBackend(t, "aws-alias", srv.Endpoint(), cfg)
			aad := []byte("dek=3;share=1")
			share, old := mustWrap(t, b, aad)
			_, err := adminClient(t, srv.Endpoint()).UpdateAlias(ctxFor(t, 10*time.Second), &kms.UpdateAliasInput{
				AliasName: aws.String(aliasName), TargetKeyId: aws.String(key2ID)})
			if err != nil {
				t.Fatal(err)
			}
			id, err := b.Probe(ctxFor(t, 10*time.Second))
			if err != nil || id != key2ARN {
				t.Fatalf("Probe after repointing = %q, %v; want %q", id, err, key2ARN)
			}
			if _, w := mustWrap(t, b, aad); w.KeyIdentity != key2ARN {
				t.Fatalf("Wrap after repointing used %q, want %q", w.KeyIdentity, key2ARN)
			}
			kmstest.MustUnwrap(t, b, old, aad, share)
		})
	}
}

func TestUnusableKey(t *testing.T) {
	srv := startLocalKMS(t)
	admin := adminClient(t, srv.Endpoint())
	one := newTestBackend(t, "aws-one", srv.Endpoint(), Config{KeyID: key1ARN})
	two := newTestBackend(t, "aws-two", srv.Endpoint(), Config{KeyID: key2ARN})
	aad := []byte("dek=4;share=1")
	_, w := mustWrap(t, one, aad)

	ctx := ctxFor(t, 10*time.Second)
	if _, err := admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(key1ID)}); err != nil {
		t.Fatal(err)
	}
	_, err := one.Probe(ctx)
	kmstest.WantKind(t, "Probe of a disabled key", err, kmsclients.ErrPermission)
	_, err = one.Wrap(ctx, []byte("share"), aad)
	kmstest.WantKind(t, "Wrap under a disabled key", err, kmsclients.ErrPermission)
	_, err = one.Unwrap(ctx, w, aad)
	kmstest.WantKind(t, "Unwrap under a disabled key", err, kmsclients.ErrPermission)

	if _, err := admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(key2ID)}); err != nil {
		t.Fatal(err)
	}
	_, err = two.Probe(ctx)
	kmstest.WantKind(t, "Probe of a key pending deletion", err, kmsclients.ErrPermission)
}

func TestServerStoppedAndRestarted(t *testing.T) {
	srv := startLocalKMS(t)
	b := newTestBackend(t, "aws-one", srv.Endpoint(), Config{KeyID: key1ARN})
	aad := []byte("dek=5;share=1")
	share, w := mustWrap(t, b, aad)

	srv.Stop()
	const budget = 3 * time.Second
	start := time.Now()
	ctx := ctxFor(t, budget)
	_, errWrap := b.Wrap(ctx, share, aad)
	_, errUnwrap := b.Unwrap(ctx, w, aad)
	_, errProbe := b.Probe(ctx)
	if elapsed := time.Since(start); elapsed > budget+time.Second {
		t.Errorf("calls to a stopped server took %v, beyond the caller's %v deadline", elapsed, budget)
	}
	for what, err := range map[string]error{"Wrap": errWrap, "Unwrap": errUnwrap, "Probe": errProbe} {
		if !errors.Is(err, kmsclients.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a stopped server: %v (kind %s), want unavailable or deadline", what, err, kmsclients.Kind(err))
		}
	}

	srv.Restart()
	kmstest.MustUnwrap(t, b, w, aad, share)
	if id, err := b.Probe(ctxFor(t, 10*time.Second)); err != nil || id != key1ARN {
		t.Fatalf("Probe after restart = %q, %v", id, err)
	}
}

// TestServerRejectsTamperedBlob gets a corrupt blob past the local
// checksum, so that KMS's own refusal and its mapping are what is tested.
func TestServerRejectsTamperedBlob(t *testing.T) {
	srv := startLocalKMS(t)
	b := newTestBackend(t, "aws-one", srv.Endpoint(), Config{KeyID: key1ARN})
	aad := []byte("dek=6;share=1")
	_, w := mustWrap(t, b, aad)
	blob, err := framing.Unframe(w.Ciphertext)
	if err != nil {
		t.Fatalf("Wrap produced a frame that Unframe refuses: %v", err)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"last byte flipped": func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"truncated":         func(b []byte) []byte { return b[:len(b)-20] },
	} {
		t.Run(name, func(t *testing.T) {
			bad := w
			bad.Ciphertext = framing.Frame(mutate(bytes.Clone(blob)))
			_, err := b.Unwrap(ctxFor(t, 10*time.Second), bad, aad)
			kmstest.WantKind(t, "Unwrap of a tampered blob", err, kmsclients.ErrInvalidCiphertext)
		})
	}
}
