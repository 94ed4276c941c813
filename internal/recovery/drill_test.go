package recovery_test

import (
	"context"
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
