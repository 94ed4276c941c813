package recovery_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// TestHeaders: each distinct header under the prefix once, in the order
// first met; plain values, other prefixes and deleted keys add none.
func TestHeaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etcd.snapshot")
	snap, err := recoverytest.NewBoltSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, value []byte) {
		if err := snap.Put(key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("/registry/secrets/a/one", kmsValue(t, []byte("header-1"), []byte("ct"), "k1"))
	put("/registry/secrets/a/two", kmsValue(t, []byte("header-1"), []byte("ct"), "k1"))
	put("/registry/configmaps/a/plain", []byte("k8s\x00plain"))
	put("/registry/secrets/b/three", kmsValue(t, []byte("header-2"), []byte("ct"), "k2"))
	put("/other/secrets/b/four", kmsValue(t, []byte("header-3"), []byte("ct"), "k3"))
	put("/registry/secrets/b/gone", kmsValue(t, []byte("header-4"), []byte("ct"), "k4"))
	if err := snap.Delete("/registry/secrets/b/gone"); err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	sc, err := recovery.Headers(context.Background(), recovery.SnapshotFile{Path: path}, "", func(h []byte) { got = append(got, bytes.Clone(h)) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], []byte("header-1")) || !bytes.Equal(got[1], []byte("header-2")) || sc.Describe == "" {
		t.Fatalf("headers %q, scan %+v", got, sc)
	}
	if _, err := recovery.Headers(context.Background(), recovery.SnapshotFile{Path: filepath.Join(t.TempDir(), "none")}, "", func([]byte) {}); err == nil {
		t.Fatal("a missing snapshot read without error")
	}
}
