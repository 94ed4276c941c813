package recovery_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// damaged writes a copy of the snapshot changed by edit.
func damaged(t *testing.T, snap string, edit func([]byte) []byte) string {
	t.Helper()
	raw, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "damaged.snapshot")
	if err := os.WriteFile(p, edit(bytes.Clone(raw)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func scanErr(t *testing.T, src recovery.Source, kr *recovery.Keyring) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := recovery.Run(ctx, recovery.Options{Source: src, Envelope: kr})
	return err
}

func TestSnapshotDamage(t *testing.T) {
	recovery.NeedsDataDecryption(t)
	f := recoverytest.NewFixture(t, false)
	snap := f.Snapshot(t, t.TempDir())
	kr := openKeyring(t, f.Plugin.WriteConfig(t, "local-a", "local-c"))
	st, _ := os.Stat(snap)
	if st.Size()%512 != 32 {
		t.Fatalf("snapshot of %d bytes has no checksum", st.Size())
	}

	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want []string
	}{
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }, []string{"corrupt snapshot", "truncated"}},
		{"truncated at a page boundary", func(b []byte) []byte { return b[:len(b)/2/4096*4096] }, []string{"corrupt snapshot", "truncated: the database needs"}},
		{"truncated to one page", func(b []byte) []byte { return b[:4096] }, []string{"corrupt snapshot", "truncated or damaged"}},
		{"truncated inside the checksum", func(b []byte) []byte { return b[:len(b)-8] }, []string{"corrupt snapshot", "truncated", "whole number"}},
		{"one byte changed", func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }, []string{"corrupt snapshot", "sha256 does not match"}},
		{"meta pages zeroed", func(b []byte) []byte { clear(b[:8192]); return b }, []string{"corrupt snapshot", "sha256 does not match"}},
		{"meta pages zeroed, no checksum", func(b []byte) []byte { clear(b[:8192]); return b[:len(b)-32] }, []string{"corrupt snapshot", "not an etcd snapshot"}},
		{"empty", func([]byte) []byte { return nil }, []string{"corrupt snapshot", "too small"}},
		{"not a database", func([]byte) []byte { return []byte(strings.Repeat("this is not bbolt\n", 1000)) }, []string{"not an etcd snapshot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := scanErr(t, recovery.SnapshotFile{Path: damaged(t, snap, tc.edit)}, kr)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		if err := scanErr(t, recovery.SnapshotFile{Path: filepath.Join(t.TempDir(), "nope")}, kr); err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v", err)
		}
	})

	t.Run("bbolt without etcd's buckets", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "other.db")
		db, err := bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("things")); return err })
		db.Close()
		if err := scanErr(t, recovery.SnapshotFile{Path: p}, kr); err == nil || !strings.Contains(err.Error(), `no "key" bucket`) {
			t.Errorf("%v", err)
		}
	})

	t.Run("member db without checksum", func(t *testing.T) {
		// What data-dir/member/snap/db holds: the database alone.
		p := damaged(t, snap, func(b []byte) []byte { return b[:len(b)-32] })
		sum := run(t, recovery.Options{Source: recovery.SnapshotFile{Path: p}, Envelope: kr})
		if !sum.OK() || sum.Decrypted != f.Decrypted() || !strings.Contains(sum.Source, "no checksum") {
			t.Fatal(summaryText(sum))
		}
	})

	t.Run("one value damaged, salvaged", func(t *testing.T) {
		key := "/registry/secrets/team-a/api-token"
		stored := f.Stored[key]
		p := damaged(t, snap, func(b []byte) []byte {
			// bbolt copies pages on write: stale copies may remain in
			// freed pages. Damage every copy.
			n := 0
			for i := bytes.Index(b, stored); i >= 0; i = bytes.Index(b, stored) {
				b[i+len(stored)-5] ^= 1 // inside the AES-GCM tag
				n++
			}
			if n == 0 {
				t.Fatal("stored value not found in the snapshot")
			}
			return b
		})
		if err := scanErr(t, recovery.SnapshotFile{Path: p}, kr); err == nil || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("checksum not checked: %v", err)
		}
		sum := run(t, recovery.Options{Source: recovery.SnapshotFile{Path: p, SkipIntegrityCheck: true}, Envelope: kr})
		text := summaryText(sum)
		if sum.OK() || !sum.Damaged || sum.Failed != 1 || sum.Decrypted != f.Decrypted()-1 || sum.Reasons[0].Examples[0] != key {
			t.Fatalf("salvage:\n%s", text)
		}
		if !strings.Contains(text, "WARNING: corrupt snapshot") || !strings.Contains(text, "salvaging") {
			t.Errorf("no warning:\n%s", text)
		}
	})

	t.Run("pages overwritten, salvaged", func(t *testing.T) {
		// Random bytes over the data pages: bbolt must not take the
		// process down, and the damage must be reported.
		for i := range 10 {
			p := damaged(t, snap, func(b []byte) []byte {
				page := 2 + i%max(1, len(b)/4096-3)
				rand.Read(b[page*4096 : page*4096+4096])
				return b
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			sum, err := recovery.Run(ctx, recovery.Options{Source: recovery.SnapshotFile{Path: p, SkipIntegrityCheck: true}, Envelope: kr})
			cancel()
			if err != nil || sum.OK() || !sum.Damaged || sum.Err() == nil {
				t.Fatalf("page %d overwritten: %v %+v", i, err, sum)
			}
			t.Logf("overwrite %d: %d decrypted, %d failed; %s", i, sum.Decrypted, sum.Failed, strings.Join(sum.Warnings, "; "))
		}
	})

	t.Run("truncated, salvaged", func(t *testing.T) {
		p := damaged(t, snap, func(b []byte) []byte { return b[:len(b)*3/4] })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sum, err := recovery.Run(ctx, recovery.Options{Source: recovery.SnapshotFile{Path: p, SkipIntegrityCheck: true}, Envelope: kr})
		if err != nil || sum.OK() || !strings.Contains(summaryText(sum), "WARNING: corrupt snapshot: truncated") {
			t.Fatalf("%v\n%s", err, summaryText(sum))
		}
	})
}
