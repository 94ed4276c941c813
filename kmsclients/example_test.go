package kmsclients_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"testing"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// memory is the smallest [kmsclients.Backend]: its key lives in memory.
type memory struct {
	src    kmsclients.Source
	aead   cipher.AEAD
	id     string // the key identity: names the key, reveals nothing of it
	closed atomic.Bool
}

var _ kmsclients.Backend = (*memory)(nil)

func newMemory(name string) (*memory, error) {
	src := kmsclients.Source{Backend: "memory", Name: name}
	if err := kmsclients.ValidateName(name); err != nil {
		return nil, &kmsclients.Error{Backend: src.Backend, Err: err}
	}
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(key)
	return &memory{src: src, aead: aead, id: "memory:" + hex.EncodeToString(sum[:8])}, nil
}

func (m *memory) Name() string { return m.src.Name }

func (m *memory) Close() error {
	m.closed.Store(true)
	return nil
}

// ready fails op when ctx is done or the backend closed.
func (m *memory) ready(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return m.src.Fail(ctx, op, nil, err)
	}
	if m.closed.Load() {
		return m.src.Errorf(op, kmsclients.ErrUnavailable, "closed")
	}
	return nil
}

func (m *memory) Probe(ctx context.Context) (string, error) {
	if err := m.ready(ctx, kmsclients.OpProbe); err != nil {
		return "", err
	}
	return m.id, nil
}

func (m *memory) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if err := m.ready(ctx, kmsclients.OpWrap); err != nil {
		return kmsclients.Wrapped{}, err
	}
	return kmsclients.Wrapped{Ciphertext: m.aead.Seal(nil, nil, share, aad), KeyIdentity: m.id}, nil
}

func (m *memory) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	if err := m.ready(ctx, kmsclients.OpUnwrap); err != nil {
		return nil, err
	}
	if w.KeyIdentity != m.id {
		return nil, m.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "wrapped by key %s, this backend has %s", w.KeyIdentity, m.id)
	}
	share, err := m.aead.Open(nil, nil, w.Ciphertext, aad)
	if err != nil {
		return nil, m.src.Errorf(kmsclients.OpUnwrap, kmsclients.ErrInvalidCiphertext, "share failed authentication")
	}
	return share, nil
}

// A backend implements five methods and reports failures as a
// [kmsclients.Error] made by a [kmsclients.Source]; the envelope then
// uses it like any other.
func ExampleBackend() {
	var backends []kmsclients.Backend
	for _, name := range []string{"mem-a", "mem-b", "mem-c"} {
		b, err := newMemory(name)
		if err != nil {
			log.Fatal(err)
		}
		backends = append(backends, b)
	}
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
	if err != nil {
		log.Fatal(err)
	}
	if err := env.Prepare(context.Background()); err != nil {
		log.Fatal(err)
	}
	sealed, err := env.Encrypt([]byte("a secret"))
	if err != nil {
		log.Fatal(err)
	}
	backends[0].Close() // any two of three still decrypt
	cold, _ := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
	plaintext, err := cold.Decrypt(context.Background(), sealed.Ciphertext, sealed.Header)
	fmt.Printf("%s %v\n", plaintext, err)
	_, err = backends[0].Probe(context.Background())
	fmt.Println(err, errors.Is(err, kmsclients.ErrUnavailable))
	// Output:
	// a secret <nil>
	// memory mem-a: probe: closed true
}

// The example backend passes the conformance suite every backend runs.
func TestExampleBackendConforms(t *testing.T) {
	mustMemory := func(t *testing.T) kmsclients.Backend {
		b, err := newMemory("mem")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	kmstest.Run(t, kmstest.Harness{
		BackendKind: "memory",
		New:         mustMemory,
		OtherKey:    mustMemory,
		Unavailable: func(t *testing.T) kmsclients.Backend {
			b := mustMemory(t)
			b.Close()
			return b
		},
	})
}
