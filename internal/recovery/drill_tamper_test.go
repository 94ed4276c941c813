package recovery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// An etcd writer plants three different tampered copies of each genuine
// header (its commitment changed), each beside more objects than the
// genuine one, so that they sort first. On a healthy 2-of-3 the drill
// must still find every backend working, call the copies tampered, exit
// 0, and ask each backend once per DEK id.
func TestDrillTellsTheTruthWhateverAnEtcdWriterPlants(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	var kvs fakeSource
	genuine := map[string]bool{}
	for key, v := range f.Stored {
		h, ok := recovery.StoredHeader(v)
		if !ok {
			continue
		}
		kvs = append(kvs, recovery.KV{Key: key, Value: v})
		if genuine[string(h)] {
			continue
		}
		genuine[string(h)] = true
		for c := range 3 {
			forged := append(bytes.Clone(h[:len(h)-1]), h[len(h)-1]^byte(c+1))
			copyValue := bytes.Replace(v, h, forged, 1)
			for o := range 1000 {
				kvs = append(kvs, recovery.KV{Key: fmt.Sprintf("%s-copy-%d-%d", key, c, o), Value: copyValue})
			}
		}
	}
	kr := openKeyring(t, f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c"))
	r, err := recovery.Drill(context.Background(), recovery.DrillOptions{Source: kvs, Envelope: kr.Envelope})
	if err != nil {
		t.Fatal(err)
	}
	tampered, drilled := 0, 0
	for _, d := range r.DEKs {
		if d.Tampered {
			tampered++
			continue
		}
		drilled++
		if d.Err != nil || d.Working != 3 {
			t.Errorf("genuine DEK %s: working %d, err %v", d.KeyID, d.Working, d.Err)
		}
		for _, s := range d.Shares {
			if !s.OK {
				t.Errorf("DEK %s: backend %s blamed: %v", d.KeyID, s.Backend, s.Err)
			}
		}
	}
	if drilled != len(genuine) || tampered != 3*len(genuine) {
		t.Fatalf("%d genuine and %d tampered, want %d and %d", drilled, tampered, len(genuine), 3*len(genuine))
	}
	if code := r.ExitCode(1); code != 0 {
		t.Fatalf("exit %d on a healthy 2-of-3", code)
	}
	for _, b := range kr.Status() {
		if calls := b.Unwraps + b.UnwrapFailures; calls != int64(drilled) {
			t.Errorf("backend %s asked %d times for %d DEK ids", b.Name, calls, drilled)
		}
	}
}

// The drill's verdict on a copy alone: its shares agree with each other,
// so it is tampered, and no backend's share is said not to fit.
func TestDrillOfATamperedCopyAloneBlamesNoBackend(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	var kvs fakeSource
	for key, v := range f.Stored {
		if h, ok := recovery.StoredHeader(v); ok {
			forged := append(bytes.Clone(h[:len(h)-1]), h[len(h)-1]^0x80)
			kvs = append(kvs, recovery.KV{Key: key, Value: bytes.Replace(v, h, forged, 1)})
			break
		}
	}
	kr := openKeyring(t, f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c"))
	r, err := recovery.Drill(context.Background(), recovery.DrillOptions{Source: kvs, Envelope: kr.Envelope})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.DEKs) != 1 || !r.DEKs[0].Tampered || !r.DEKs[0].HeaderTampered || r.ExitCode(1) != 0 {
		t.Fatalf("report %+v, exit %d", r.DEKs, r.ExitCode(1))
	}
	for _, s := range r.DEKs[0].Shares {
		if !errors.Is(s.Err, envelope.ErrHeaderTampered) {
			t.Errorf("backend %s: %v", s.Backend, s.Err)
		}
	}
}
