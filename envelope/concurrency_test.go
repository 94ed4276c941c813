package envelope

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
)

// Every part of an Envelope at once: seals and opens, rotations, probes
// that change what they see, another node's newer DEK to adopt, drills
// and status reads. Under -race this checks that each part's state is
// reached only under its own lock; the generations never go back.
func TestEnvelopeIsSafeForConcurrentUse(t *testing.T) {
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir()})
	other := mustNew(t, Config{Threshold: 2, Backends: bs})
	for range 3 {
		if err := other.Rotate(ctxT(t), "newer than e's"); err != nil {
			t.Fatal(err)
		}
	}
	newer := mustEncrypt(t, other, seed)
	ctx := ctxT(t)
	ids := map[string]string{}
	for _, b := range bs {
		id, err := b.Probe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[b.Name()] = id
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	run := func(f func(i int) error) {
		wg.Go(func() {
			for i := range 20 {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	run(func(i int) error { return roundTrip(ctx, e, i) })
	run(func(i int) error { return roundTrip(ctx, e, i+100) })
	run(func(int) error { return e.Rotate(ctx, "test") })
	run(func(i int) error {
		if i%2 == 0 {
			e.RotationDue(ids)
		} else {
			e.RotationDue(map[string]string{})
		}
		return nil
	})
	run(func(int) error {
		e.lookup.cache.Purge()
		got, err := e.Decrypt(ctx, newer.Ciphertext, newer.Header)
		if err == nil && !bytes.Equal(got, seed) {
			err = fmt.Errorf("another node's ciphertext opened to %q", got)
		}
		return err
	})
	run(func(int) error {
		_, err := e.Drill(ctx, e.CurrentHeader())
		return err
	})
	var gens []uint32
	run(func(int) error {
		info := e.CurrentInfo()
		if info.KeyID == "" || !e.Ready() || e.Current() == nil {
			return fmt.Errorf("status went back to no DEK: %+v", info)
		}
		gens = append(gens, info.Generation)
		return nil
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 1; i < len(gens); i++ {
		if gens[i] < gens[i-1] {
			t.Fatalf("generation went back: %v", gens)
		}
	}
}

// roundTrip seals and opens one value.
func roundTrip(ctx context.Context, e *Envelope, i int) error {
	pt := fmt.Appendf(nil, "value %d", i)
	s, err := e.Encrypt(pt)
	if err != nil {
		return err
	}
	got, err := e.Decrypt(ctx, s.Ciphertext, s.Header)
	if err == nil && !bytes.Equal(got, pt) {
		err = fmt.Errorf("value %d opened to %q", i, got)
	}
	return err
}
