package recovery

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		name         string
		tty          bool
		total        int64
		want, absent []string
	}{
		{"terminal", true, 400, []string{"\rrecover: 100/400 objects, ", " objects/s, ETA ", ", 2 failed\x1b[K", "\n"}, nil},
		{"log", false, 400, []string{"recover: 100/400 objects, ", ", ETA ", ", 2 failed\n"}, []string{"\r", "\x1b"}},
		{"total unknown", false, 0, []string{"recover: 100 objects, "}, []string{"ETA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			l := &progressLine{w: &b, what: "recover", start: time.Now().Add(-time.Second), tty: tc.tty}
			l.show(100, tc.total, "objects", 2)
			l.end()
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("%q lacks %q", b.String(), w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(b.String(), a) {
					t.Errorf("%q holds %q", b.String(), a)
				}
			}
		})
	}
}

// TestWalkWithFilterAlwaysWrong: when the filter takes every key for one
// seen before (as it does for some, by design), each key still comes out
// once, at its latest revision, and deleted keys do not.
func TestWalkWithFilterAlwaysWrong(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	snap, err := recoverytest.NewBoltSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct{ key, value string }{
		{"/r/a", "a1"}, {"/r/b", "b1"}, {"/r/a", "a2"}, {"/r/c", "c1"}, {"/r/c", ""}, {"/r/d", "d1"}, {"/r/d", ""}, {"/r/d", "d3"}, {"/other/e", "e1"},
	} {
		if op.value == "" {
			err = snap.Delete(op.key)
		} else {
			err = snap.Put(op.key, []byte(op.value))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, saturated := range []bool{false, true} {
		var got []string
		err := db.View(func(tx *bolt.Tx) error {
			w := &walk{ctx: context.Background(), prefix: []byte("/r/"), b: tx.Bucket(keyBucket)}
			seen := newKeyFilter(0)
			if saturated {
				for i := range seen.bits {
					seen.bits[i] = ^uint64(0)
				}
			}
			lt, err := w.latest(seen)
			if err != nil {
				return err
			}
			return w.visit(lt, func(kv KV) error { got = append(got, string(kv.Value)); return nil }, &Scan{})
		})
		if err != nil || strings.Join(got, " ") != "b1 a2 d3" {
			t.Errorf("saturated filter %v: %q, %v; want b1 a2 d3", saturated, got, err)
		}
	}
}

// TestDecrypterReplacesItsTransformer: kube-apiserver's KMS v2 read path
// keeps a derived key per etcd key for ten minutes; the Decrypter drops
// it after transformerUses values, so a recovery does not keep one per
// object.
func TestDecrypterReplacesItsTransformer(t *testing.T) {
	d := NewDecrypter(context.Background(), nil, DecrypterOptions{})
	first, err := d.transformer("p")
	if err != nil {
		t.Fatal(err)
	}
	for range transformerUses - 1 {
		if tr, _ := d.transformer("p"); tr != first {
			t.Fatal("replaced too soon")
		}
	}
	if tr, _ := d.transformer("p"); tr == first {
		t.Fatalf("still the same transformer after %d values", transformerUses)
	}
}
