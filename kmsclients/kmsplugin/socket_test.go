package kmsplugin

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/internal/plugintest"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// custodians is the 2-of-3 setup of the socket tests: two KMS plugin
// custodians (the fake plugin on real sockets) and a key file.
type custodians struct {
	a, b     *fakeServer
	kpA, kpB *Backend
	backends []kmsclients.Backend
}

func newCustodians(t *testing.T) *custodians {
	c := &custodians{a: startFake(t), b: startFake(t)}
	c.kpA = newTestBackend(t, "plugin-a", c.a.endpoint())
	c.kpB = newTestBackend(t, "plugin-b", c.b.endpoint())
	c.backends = []kmsclients.Backend{c.kpA, c.kpB, plugintest.LocalBackend(t, "break-glass")}
	return c
}

// coldEnvelope opens headers with the same backends and a cache of one
// DEK: Decrypts that alternate between DEKs are all cold (every share
// asked of the backends).
func (c *custodians) coldEnvelope(t *testing.T, backends ...kmsclients.Backend) *envelope.Envelope {
	if backends == nil {
		backends = c.backends
	}
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends, CacheSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func coldDecrypt(env *envelope.Envelope, r *kmsservice.EncryptResponse) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return env.Decrypt(ctx, r.Ciphertext, r.Annotations[grpcserver.SharesAnnotation])
}

// TestThroughThePluginSocket runs the plugin 2 of 3 over two KMS plugin
// custodians and a key file, driven by kube-apiserver's own client; a
// node without the key file decrypts with the two custodians.
func TestThroughThePluginSocket(t *testing.T) {
	c := newCustodians(t)
	p := plugintest.Start(t, 2, c.backends...)
	r, seed := p.Encrypt(t)
	if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("round trip: %v", err)
	}
	other := plugintest.Start(t, 2, c.kpA, c.kpB, plugintest.LocalBackend(t, "break-glass"))
	if got, err := other.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with the two custodians alone: %v", err)
	}
}

// TestCustodianStoppedUnderLoad: Decrypts of cached DEKs (through the
// socket) and of cold ones (every share asked) run in a loop while one
// custodian is stopped and started again: none fails. The stopped one is
// the faster, so it is in the quorum until it stops; then the key file
// and the slower custodian are.
func TestCustodianStoppedUnderLoad(t *testing.T) {
	c := newCustodians(t)
	p := plugintest.Start(t, 2, c.backends...)
	var rs []*kmsservice.EncryptResponse
	var seed []byte
	for i := range 4 {
		var r *kmsservice.EncryptResponse
		r, seed = p.Encrypt(t)
		rs = append(rs, r)
		if i < 3 {
			if err := p.Env.Rotate(ctxFor(t, 30*time.Second), "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.a.kms.set(func(k *fakeKMS) { k.latency = 5 * time.Millisecond })
	c.b.kms.set(func(k *fakeKMS) { k.latency = 40 * time.Millisecond })
	env := c.coldEnvelope(t)

	var cached, cold, coldWhileDown, failed atomic.Int64
	var down atomic.Bool
	var firstErr sync.Once
	fail := func(what string, err error) {
		failed.Add(1)
		firstErr.Do(func() { t.Errorf("%s: %v", what, err) })
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := rs[i%len(rs)]
				if w%2 == 0 {
					if got, err := p.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
						fail("cached decrypt", err)
					}
					cached.Add(1)
					continue
				}
				if got, err := coldDecrypt(env, r); err != nil || !bytes.Equal(got, seed) {
					fail("cold decrypt", err)
				}
				cold.Add(1)
				if down.Load() {
					coldWhileDown.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	usedBefore := c.a.kms.decryptCount()
	c.a.stop()
	down.Store(true)
	time.Sleep(time.Second)
	down.Store(false)
	c.a.start(t)
	waitUp(t, c.kpA)
	usedWhileDown := c.a.kms.decryptCount()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	t.Logf("%d cached and %d cold decrypts (%d with plugin-a stopped), %d failed", cached.Load(), cold.Load(), coldWhileDown.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	if usedBefore == 0 || coldWhileDown.Load() < 5 || cached.Load() < 10 {
		t.Fatalf("too little load: plugin-a answered %d before it stopped, %d cold decrypts while it was down, %d cached", usedBefore, coldWhileDown.Load(), cached.Load())
	}
	if c.a.kms.decryptCount() == usedWhileDown {
		t.Fatal("plugin-a was not used again once back")
	}
}

// TestCustodianRotatesKeyID: a custodian's key_id flip-flopping rotates
// nothing; a key_id that stays new is seen by a probe and rotates the DEK
// once, also when a rotation was asked for meanwhile; data written before
// still decrypts.
func TestCustodianRotatesKeyID(t *testing.T) {
	c := newCustodians(t)
	p := plugintest.Start(t, 2, c.backends...)
	r0, seed := p.Encrypt(t)
	kid0 := p.Env.KeyID()
	probe := func() {
		t.Helper()
		if h := p.Probe(); h != "ok" {
			t.Fatalf("healthz: %q", h)
		}
	}

	keyA0 := c.a.kms.currentID()
	keyA1 := c.a.kms.rotate()
	probe()
	c.a.kms.use(keyA0)
	probe()
	c.a.kms.use(keyA1)
	probe()
	c.a.kms.use(keyA0)
	probe()
	if p.Env.KeyID() != kid0 {
		t.Fatal("a flip-flopping key_id rotated the DEK")
	}

	keyA2 := c.a.kms.rotate()
	probe()
	if p.Env.KeyID() != kid0 {
		t.Fatal("the first probe that saw a new key_id rotated the DEK")
	}
	probe()
	kid1 := p.Env.KeyID()
	if kid1 == kid0 {
		t.Fatal("a new key_id seen by two probes did not rotate the DEK")
	}
	for range 3 {
		probe()
	}
	if p.Env.KeyID() != kid1 {
		t.Fatal("the DEK rotated more than once")
	}
	if id := p.Env.Current().Shares[0].KeyIdentity; !strings.HasSuffix(id, ":"+keyA2) {
		t.Fatalf("plugin-a's share of the new DEK is under %q, want key_id %s", id, keyA2)
	}

	// A rotation asked for before any probe saw the custodian's new
	// key_id is postponed, not made under a key_id Probe does not report
	// (which would rotate again); the next probe makes it, once.
	keyA3 := c.a.kms.rotate()
	if err := p.Env.Rotate(ctxFor(t, 30*time.Second), "requested"); err == nil || !strings.Contains(err.Error(), "key is changing") {
		t.Fatalf("rotation under an unconfirmed key_id: %v", err)
	}
	if p.Env.KeyID() != kid1 {
		t.Fatal("a postponed rotation changed the key_id")
	}
	probe()
	kid2 := p.Env.KeyID()
	if kid2 == kid1 || !strings.HasSuffix(p.Env.Current().Shares[0].KeyIdentity, ":"+keyA3) {
		t.Fatalf("after the probe that confirmed %s: key_id %s, plugin-a's share under %q", keyA3, kid2, p.Env.Current().Shares[0].KeyIdentity)
	}
	probe()
	if p.Env.KeyID() != kid2 {
		t.Fatal("the DEK rotated twice for one new key_id")
	}
	if got, err := coldDecrypt(c.coldEnvelope(t), r0); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("data written under the old key_id: %v", err)
	}
	// The old DEK's share under plugin-a's old key is still what opens it.
	noFile := c.coldEnvelope(t, c.kpA, c.kpB, plugintest.LocalBackend(t, "break-glass"))
	if got, err := coldDecrypt(noFile, r0); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("data written under the old key_id, with the two custodians: %v", err)
	}
}

// recording records the errors of a backend's unwraps.
type recording struct {
	kmsclients.Backend
	mu   sync.Mutex
	errs []error
}

func (r *recording) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	share, err := r.Backend.Unwrap(ctx, w, aad)
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	return share, err
}

// TestCustodianReturnsAnotherPlaintext: a custodian that answers Decrypt
// with another plaintext is caught by the binding (invalid ciphertext),
// and the 2 of 3 still decrypts through the others.
func TestCustodianReturnsAnotherPlaintext(t *testing.T) {
	c := newCustodians(t)
	p := plugintest.Start(t, 2, c.backends...)
	other := plugintest.Start(t, 2, c.backends...)
	r, seed := p.Encrypt(t)
	c.b.kms.set(func(k *fakeKMS) { k.lie = true })
	// plugin-a answers last, so that the liar's answer is in before a
	// quorum is.
	c.a.kms.set(func(k *fakeKMS) { k.latency = 200 * time.Millisecond })

	liar := &recording{Backend: c.kpB}
	env := c.coldEnvelope(t, c.kpA, liar, c.backends[2])
	if got, err := coldDecrypt(env, r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("cold decrypt with plugin-b lying: %v", err)
	}
	liar.mu.Lock()
	errs := liar.errs
	liar.mu.Unlock()
	if len(errs) != 1 || !errors.Is(errs[0], kmsclients.ErrInvalidCiphertext) || !strings.Contains(errs[0].Error(), "binding") {
		t.Fatalf("plugin-b's unwraps: %v, want one refused by the binding", errs)
	}
	if got, err := other.Decrypt(r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt through the socket of another node: %v", err)
	}

	// With plugin-a down too, the liar cannot make up the quorum.
	c.a.stop()
	if got, err := coldDecrypt(c.coldEnvelope(t), r); err == nil {
		t.Fatalf("decrypt with plugin-a down and plugin-b lying returned %x", got)
	}
}
