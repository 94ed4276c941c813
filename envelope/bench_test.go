package envelope

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Benchmarks report ratios against a baseline measured in the same loop,
// so that a noisy shared machine moves both sides alike:
//   - warm Encrypt/Decrypt against a bare AES-256-GCM seal/open of the
//     same bytes (what any envelope must at least cost);
//   - cold Decrypt against the time the quorum's slowest member itself
//     took (the floor for any k-of-n scheme).

func plainGCM(b *testing.B) cipher.AEAD {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	return aead
}

func benchEnvelope(b *testing.B) *Envelope {
	e, err := New(Config{Threshold: 2, Backends: newLocals(b, 3)})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Prepare(context.Background()); err != nil {
		b.Fatal(err)
	}
	return e
}

// interleave times f and baseline alternately and reports both and their ratio.
func interleave(b *testing.B, name string, f, baseline func()) {
	var ours, base time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		f()
		t1 := time.Now()
		baseline()
		base += time.Since(t1)
		ours += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ours.Nanoseconds())/n, "trousseau-ns/op")
	b.ReportMetric(float64(base.Nanoseconds())/n, name+"-ns/op")
	b.ReportMetric(float64(ours)/float64(base), "x-"+name)
}

func BenchmarkEncrypt(b *testing.B) {
	e := benchEnvelope(b)
	aead := plainGCM(b)
	nonce := make([]byte, 12)
	interleave(b, "aesgcm", func() {
		if _, err := e.Encrypt(seed); err != nil {
			b.Fatal(err)
		}
	}, func() {
		rand.Read(nonce)
		aead.Seal(nil, nonce, seed, nil)
	})
}

func BenchmarkDecryptWarm(b *testing.B) {
	e := benchEnvelope(b)
	s, _ := e.Encrypt(seed)
	ctx := context.Background()
	aead := plainGCM(b)
	nonce := make([]byte, 12)
	sealed := aead.Seal(nil, nonce, seed, nil)
	interleave(b, "aesgcm", func() {
		if _, err := e.Decrypt(ctx, s.Ciphertext, s.Header); err != nil {
			b.Fatal(err)
		}
	}, func() {
		if _, err := aead.Open(nil, nonce, sealed, nil); err != nil {
			b.Fatal(err)
		}
	})
}

// timed records how long its backend's unwraps took.
type timed struct {
	kmsclients.Backend
	total, calls atomic.Int64
}

func (t *timed) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	start := time.Now()
	defer func() { t.total.Add(int64(time.Since(start))); t.calls.Add(1) }()
	return t.Backend.Unwrap(ctx, w, aad)
}

// BenchmarkDecryptCold: 2 of 3, one backend at ~200 ms, one dead; a cold
// Decrypt should cost the slow one's time (x-quorum-floor near 1).
func BenchmarkDecryptCold(b *testing.B) {
	sw := wrapSwitchable(newLocals(b, 3))
	slow := &timed{Backend: sw[1]}
	e, err := New(Config{Threshold: 2, Backends: []kmsclients.Backend{sw[0], slow, sw[2]}})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Prepare(context.Background()); err != nil {
		b.Fatal(err)
	}
	s, _ := e.Encrypt(seed)
	sw[1].delay.Store(int64(200 * time.Millisecond))
	sw[2].down.Store(true)
	sw[2].hang.Store(true)
	ctx := context.Background()
	slow.total.Store(0)
	slow.calls.Store(0)
	var ours time.Duration
	b.ResetTimer()
	for range b.N {
		e.lookup.cache.Purge()
		t0 := time.Now()
		if _, err := e.Decrypt(ctx, s.Ciphertext, s.Header); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
	}
	b.StopTimer()
	floor := float64(slow.total.Load()) / float64(slow.calls.Load())
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "decrypt-ms/op")
	b.ReportMetric(floor/1e6, "slow-backend-ms/op")
	b.ReportMetric(float64(ours.Nanoseconds())/float64(b.N)/floor, "x-quorum-floor")
}

// BenchmarkTamperedVariants: variants of a known DEK's header, one of
// three backends dark; backend-calls/variant should be 0, x-warm near 1.
func BenchmarkTamperedVariants(b *testing.B) {
	sw, e, s := warmWithADarkBackend(b)
	ctx := context.Background()
	variants := make([][]byte, b.N)
	for i := range variants {
		variants[i] = variant(s.Header, i)
	}
	before := totalCalls(sw)
	i := 0
	interleave(b, "warm", func() {
		if _, err := e.Decrypt(ctx, s.Ciphertext, variants[i]); err == nil {
			b.Fatal("a variant decrypted")
		}
		i++
	}, func() {
		if _, err := e.Decrypt(ctx, s.Ciphertext, s.Header); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(totalCalls(sw)-before)/float64(b.N), "backend-calls/variant")
}

// BenchmarkTamperedUnknownDEK: forged headers of unseen DEK ids, one of
// three backends known down; each should cost the live answers (x-warm
// against a warm Decrypt), not the dark backend's deadline.
func BenchmarkTamperedUnknownDEK(b *testing.B) {
	sw, e, s := warmWithADarkBackend(b)
	e.RotationDue(map[string]string{sw[0].Name(): "a", sw[1].Name(): "b"})
	ctx := context.Background()
	forged := make([][]byte, b.N)
	for i := range forged {
		forged[i] = bytes.Clone(s.Header)
		binary.BigEndian.PutUint64(forged[i][dekIDOffset:], uint64(i)+1)
	}
	before := totalCalls(sw)
	i := 0
	interleave(b, "warm", func() {
		if _, err := e.Decrypt(ctx, s.Ciphertext, forged[i]); err == nil {
			b.Fatal("a forged header decrypted")
		}
		i++
	}, func() {
		if _, err := e.Decrypt(ctx, s.Ciphertext, s.Header); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(totalCalls(sw)-before)/float64(b.N), "backend-calls/header")
}

// warmWithADarkBackend is withADarkBackend with the DEK cached.
func warmWithADarkBackend(b *testing.B) (sw []*switchable, e *Envelope, s Sealed) {
	sw = wrapSwitchable(newLocals(b, 3))
	e = mustNew(b, Config{Threshold: 2, Backends: asBackends(sw)})
	s = mustEncrypt(b, e, seed)
	if _, err := e.Decrypt(context.Background(), s.Ciphertext, s.Header); err != nil {
		b.Fatal(err)
	}
	sw[2].down.Store(true)
	sw[2].hang.Store(true)
	return sw, e, s
}

// BenchmarkDecryptWarmWithOfficers: a warm Decrypt under a version 2
// header (three officers, one post-quantum: a header ~10x larger) against
// one under a version 1 header, same backends (x-without-officers near 1).
func BenchmarkDecryptWarmWithOfficers(b *testing.B) {
	bs := newLocals(b, 3)
	plain := mustNew(b, Config{Threshold: 2, Backends: bs})
	withOfficers := mustNew(b, Config{Threshold: 2, Backends: bs, Recovery: newOfficers(b, 2, 3).policy(b, bs)})
	s1, s2 := mustEncrypt(b, plain, seed), mustEncrypt(b, withOfficers, seed)
	ctx := context.Background()
	interleave(b, "without-officers", func() {
		if _, err := withOfficers.Decrypt(ctx, s2.Ciphertext, s2.Header); err != nil {
			b.Fatal(err)
		}
	}, func() {
		if _, err := plain.Decrypt(ctx, s1.Ciphertext, s1.Header); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(len(s2.Header)), "header-bytes")
	b.ReportMetric(float64(len(s1.Header)), "v1-header-bytes")
}
