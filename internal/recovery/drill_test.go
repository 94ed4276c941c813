package recovery_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// A drill over a real etcd snapshot: every DEK of the stored data, every
// backend asked, the margin per DEK, and the exit code an operator's
// monitoring reads.
func TestDrillOverASnapshot(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	source := recovery.SnapshotFile{Path: f.Snapshot(t, t.TempDir())}
	drill := func(names ...string) *recovery.DrillReport {
		t.Helper()
		kr := openKeyring(t, f.Plugin.WriteConfig(t, names...))
		r, err := recovery.Drill(context.Background(), recovery.DrillOptions{Source: source, Envelope: kr.Envelope})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	all := drill("local-a", "local-b", "local-c")
	if len(all.DEKs) != 2 {
		t.Fatalf("DEKs found: %d, want the plugin's 2", len(all.DEKs))
	}
	objects := 0
	for _, d := range all.DEKs {
		objects += d.Objects
		if d.Working != 3 || d.Margin() != 1 || d.Resources["secrets"] == 0 {
			t.Errorf("all backends: %+v", d)
		}
	}
	if objects != f.Decrypted() || all.ExitCode(1) != 0 {
		t.Fatalf("objects %d (want %d), exit %d", objects, f.Decrypted(), all.ExitCode(1))
	}

	// The key file of local-c lost: each DEK at margin 0, exit 1.
	os.Remove(f.Plugin.KeyFiles["local-c"])
	lost := drill("local-a", "local-b", "local-c")
	for _, d := range lost.DEKs {
		if d.Margin() != 0 || d.Shares[2].OK {
			t.Errorf("local-c lost: %+v", d)
		}
	}
	if lost.ExitCode(1) != 1 || lost.ExitCode(0) != 0 {
		t.Fatalf("exit codes with margin 0: %d (min 1), %d (min 0)", lost.ExitCode(1), lost.ExitCode(0))
	}

	// Only one backend left: unrecoverable, exit 2.
	if r := drill("local-a"); r.ExitCode(1) != 2 {
		t.Fatalf("one backend of 2-of-3: exit %d", r.ExitCode(1))
	}
}

func TestDrillOfAnEmptyStateDirFails(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	kr := openKeyring(t, f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c"))
	if _, err := recovery.Drill(context.Background(), recovery.DrillOptions{StateDir: t.TempDir(), Envelope: kr.Envelope}); err == nil {
		t.Fatal("an empty state dir drilled")
	}
}

func FuzzStoredHeader(f *testing.F) {
	f.Add([]byte("k8s:enc:kms:v2:trousseau:\x0a\x01x"))
	f.Add([]byte("k8s:enc:kms:v1:trousseau:\x00\x08TRS1\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recovery.StoredHeader(b) // must not panic, whatever etcd holds
	})
}

// fakeSource serves fixed values, as a snapshot would.
type fakeSource []recovery.KV

func (f fakeSource) Scan(_ context.Context, req recovery.ScanRequest) (*recovery.Scan, error) {
	for _, kv := range f {
		if err := req.Visit(kv); err != nil {
			return nil, err
		}
	}
	return &recovery.Scan{Describe: "test values"}, nil
}

// An etcd writer copies a genuine header with one byte of its commitment
// changed (same key_id). The drill must not call that DEK unrecoverable,
// nor ask the backends again for each copy.
func TestDrillReportsTamperedCopiesWithoutBlamingCustody(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	var kvs fakeSource
	for key, v := range f.Stored {
		if h, ok := recovery.StoredHeader(v); ok && len(kvs) < 3 {
			kvs = append(kvs, recovery.KV{Key: key, Value: v})
			tampered := bytes.Replace(v, h, append(bytes.Clone(h[:len(h)-1]), h[len(h)-1]^1), 1)
			for i := range 4 {
				kvs = append(kvs, recovery.KV{Key: fmt.Sprintf("%s-copy-%d", key, i), Value: tampered})
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
		if d.Margin() != 1 {
			t.Errorf("genuine DEK %s at margin %d", d.KeyID, d.Margin())
		}
	}
	if tampered == 0 || r.ExitCode(1) != 0 {
		t.Fatalf("%d tampered copies reported, exit %d: %+v", tampered, r.ExitCode(1), r.DEKs)
	}
	for _, b := range kr.Status() {
		// At most a few headers per DEK id are drilled (here the copy
		// stored beside most objects, then the genuine one), not all 4.
		if calls := b.Unwraps + b.UnwrapFailures; calls > int64(2*drilled) {
			t.Errorf("backend %s asked %d times for %d genuine DEKs", b.Name, calls, drilled)
		}
	}
}
