package recovery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery"
)

const recovered = "kind: Secret\ndata:\n  password: c2VjcmV0\n"

var dbSecret = recovery.Key{Resource: "secrets", Namespace: "ns", Name: "db"}

// foreign makes path another user's for a sink opened as the returned
// uid: chowned to nobody when the test runs as root (as in CI), else
// left as it is while the sink runs as another uid than ours, which
// makes everything already there someone else's.
func foreign(t *testing.T, path string) (sinkUID int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return os.Geteuid() + 1
	}
	if err := os.Lchown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return 0
}

// put writes one manifest of dbSecret through a new sink as uid.
func put(t *testing.T, dir string, uid int) error {
	t.Helper()
	sink, err := recovery.NewDirSinkOwnedBy(dir, recovery.YAML, uid)
	if err != nil {
		return err
	}
	if err := sink.Put(dbSecret, []byte(recovered)); err != nil {
		return err
	}
	return sink.Close()
}

func wantRefused(t *testing.T, err error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an error with %q", words)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%v; want %q", err, w)
		}
	}
}

func wantHolds(t *testing.T, path, was string) {
	t.Helper()
	if b, err := os.ReadFile(path); err != nil || string(b) != was {
		t.Fatalf("%s holds %q (%v), want %q", path, b, err, was)
	}
}

// A local user who can plant directories or files where recover writes
// must not get the recovered Secrets: what is not ours, has a second
// link or is a symlink is refused and left as it was.
func TestOutputDirectoryRefusesWhatIsNotOurs(t *testing.T) {
	euid := os.Geteuid()
	t.Run("directory of another user", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		os.Mkdir(dir, 0o700)
		uid := foreign(t, dir)
		_, err := recovery.NewDirSinkOwnedBy(dir, recovery.YAML, uid)
		wantRefused(t, err, dir+" is owned by uid", "remove it, or use another directory")
	})
	t.Run("directory on the way of another user", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		sub := filepath.Join(dir, "ns", "secrets")
		os.MkdirAll(sub, 0o700)
		uid := foreign(t, sub)
		wantRefused(t, put(t, dir, uid), "is owned by uid")
		if _, err := os.Stat(filepath.Join(sub, "db.yaml")); err == nil {
			t.Fatal("the Secret was written")
		}
	})
	t.Run("file of another user", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		file := filepath.Join(dir, "ns", "secrets", "db.yaml")
		os.MkdirAll(filepath.Dir(file), 0o700)
		os.WriteFile(file, []byte("planted"), 0o666)
		uid := foreign(t, file)
		wantRefused(t, put(t, dir, uid), "is owned by uid")
		wantHolds(t, file, "planted")
	})
	t.Run("file with a second link", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		file := filepath.Join(dir, "ns", "secrets", "db.yaml")
		os.MkdirAll(filepath.Dir(file), 0o700)
		os.WriteFile(file, []byte("planted"), 0o600)
		kept := filepath.Join(t.TempDir(), "kept")
		if err := os.Link(file, kept); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, put(t, dir, euid), file+" has 2 links")
		wantHolds(t, kept, "planted")
	})
	t.Run("symlink at the file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		file := filepath.Join(dir, "ns", "secrets", "db.yaml")
		os.MkdirAll(filepath.Dir(file), 0o700)
		target := filepath.Join(t.TempDir(), "target")
		os.WriteFile(target, []byte("planted"), 0o644)
		os.Symlink(target, file)
		wantRefused(t, put(t, dir, euid), file+" is a symlink")
		wantHolds(t, target, "planted")
	})
	t.Run("symlink on the way", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		os.Mkdir(dir, 0o700)
		elsewhere := t.TempDir()
		os.Symlink(elsewhere, filepath.Join(dir, "ns"))
		wantRefused(t, put(t, dir, euid), filepath.Join(dir, "ns")+" is a symlink")
		if _, err := os.Stat(filepath.Join(elsewhere, "secrets")); err == nil {
			t.Fatal("written where the symlink leads")
		}
	})
	t.Run("output directory is a symlink", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "out")
		os.Symlink(t.TempDir(), link)
		_, err := recovery.NewDirSinkOwnedBy(link, recovery.YAML, euid)
		wantRefused(t, err, link+" is a symlink")
	})
}

// Files are 0600 as created: under umask 0 a file created wider and
// chmodded after would show its creation mode. A rerun over our own
// output replaces the files.
func TestOutputFilesArePrivateFromCreation(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "out")
	file := filepath.Join(dir, "ns", "secrets", "db.yaml")
	for range 2 {
		if err := put(t, dir, os.Geteuid()); err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(file)
		if err != nil || st.Mode() != 0o600 || st.Sys().(*syscall.Stat_t).Nlink != 1 {
			t.Fatalf("%s: %v, mode %v", file, err, st.Mode())
		}
		wantHolds(t, file, recovered)
	}
}

// Two etcd keys that make one file name (services/specs and
// services_specs), and names a terminal would act on, are refused:
// the first file stays, no file name holds a control character.
func TestOutputFileNamesFromKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	sink, err := recovery.NewDirSink(dir, recovery.YAML)
	if err != nil {
		t.Fatal(err)
	}
	first := recovery.Key{Resource: "services/specs", Namespace: "ns", Name: "a"}
	if err := sink.Put(first, []byte("first")); err != nil {
		t.Fatal(err)
	}
	err = sink.Put(recovery.Key{Resource: "services_specs", Namespace: "ns", Name: "a"}, []byte("second"))
	wantRefused(t, err, "ns/services_specs/a.yaml is already the file of services/specs/ns/a")
	wantHolds(t, filepath.Join(dir, "ns", "services_specs", "a.yaml"), "first")
	for _, name := range []string{"\x1b[2J\x1b[H all recovered", "a\nb", "\u202etxt.exe", "\xff", "..", "a/b"} {
		err := sink.Put(recovery.Key{Resource: "secrets", Namespace: "ns", Name: name}, []byte("x"))
		wantRefused(t, err, "cannot make a file name of")
		if strings.ContainsAny(err.Error(), "\x1b\n\u202e\xff") {
			t.Errorf("the error holds the raw name: %q", err)
		}
	}
	sink.Close()
	entries, _ := os.ReadDir(filepath.Join(dir, "ns"))
	if len(entries) != 1 {
		t.Errorf("files made: %v", entries)
	}
}

// A key made to clear the screen, in a recover summary: escaped.
func TestSummaryPrintsKeysEscaped(t *testing.T) {
	recovery.NeedsDataDecryption(t)
	src := memSource{{Key: "/registry/secrets/ns/\x1b[2J\x1b[H all recovered", Value: []byte("k8s:enc:kms:v2:trousseau:\x1b[2J")}}
	sum, err := recovery.Run(context.Background(), recovery.Options{Source: src, Envelope: nopEnvelope{}})
	if err != nil {
		t.Fatal(err)
	}
	text := summaryText(sum)
	if strings.Contains(text, "\x1b") || !strings.Contains(text, `\x1b[2J\x1b[H all recovered`) {
		t.Fatalf("summary:\n%q", text)
	}
}

// TestDirSinkWritesFromManyGoroutines: files no other key can make are
// written at once from several goroutines (run with -race); a path two
// keys could share is left to Put, which writes in order and refuses the
// second.
func TestDirSinkWritesFromManyGoroutines(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	sink, err := recovery.NewDirSink(dir, recovery.YAML)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				k := recovery.Key{Resource: "secrets", Namespace: fmt.Sprintf("ns-%d", i%5), Name: fmt.Sprintf("s-%d-%d", g, i)}
				if done, err := sink.PutUnordered(k, []byte(recovered)); !done || err != nil {
					t.Errorf("%v: written %v, %v", k, done, err)
				}
			}
		})
	}
	wg.Wait()
	shared := recovery.Key{Resource: "services/specs", Namespace: "ns", Name: "a"}
	if done, err := sink.PutUnordered(shared, []byte("x")); done || err != nil {
		t.Errorf("a path two keys can share was written out of order (%v)", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ns-*", "secrets", "*"))
	if len(files) != 400 {
		t.Fatalf("%d files, want 400", len(files))
	}
	wantHolds(t, filepath.Join(dir, "ns-3", "secrets", "s-7-48.yaml"), recovered)
}

// TestDirSinkFlushesAsItWrites: the directory is flushed while files are
// written, not only at Close, and what was written is whole after it.
func TestDirSinkFlushesAsItWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	sink, err := recovery.NewDirSink(dir, recovery.YAML)
	if err != nil {
		t.Fatal(err)
	}
	sink.FlushEvery(int64(3 * len(recovered)))
	for i := range 30 {
		k := recovery.Key{Resource: "secrets", Namespace: "ns", Name: fmt.Sprintf("s-%d", i)}
		if done, err := sink.PutUnordered(k, []byte(recovered)); !done || err != nil {
			t.Fatalf("%v: written %v, %v", k, done, err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sink.Flushes(); n == 0 {
		t.Error("no flush while writing: every file waited for Close")
	}
	for i := range 30 {
		wantHolds(t, filepath.Join(dir, "ns", "secrets", fmt.Sprintf("s-%d.yaml", i)), recovered)
	}
}

// countingWriter counts the writes it gets; it fails from the write
// failAt on, when failAt > 0.
type countingWriter struct {
	writes, failAt int
	bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.failAt > 0 && w.writes >= w.failAt {
		return 0, errors.New("broken pipe")
	}
	return w.Buffer.Write(p)
}

// TestStreamSinkBuffers: objects reach the stream in large writes (one
// per object cost more than rendering it), all of them by Close, and a
// write that fails fails the objects after it and Close.
func TestStreamSinkBuffers(t *testing.T) {
	w := &countingWriter{}
	sink := recovery.NewStreamSink(w, recovery.YAML)
	for range 1000 {
		if err := sink.Put(dbSecret, []byte(recovered)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(w.String(), "kind: Secret"); n != 1000 || w.writes > 10 {
		t.Errorf("%d objects in %d writes", n, w.writes)
	}
	broken := recovery.NewStreamSink(&countingWriter{failAt: 1}, recovery.YAML)
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		err = broken.Put(dbSecret, []byte(recovered))
	}
	if err == nil || broken.Close() == nil {
		t.Errorf("a failed write went unreported: %v", err)
	}
}
