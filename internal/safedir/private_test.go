package safedir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const secret = "the recovered Secret"

func openPrivate(t *testing.T, dir string) *PrivateDir {
	t.Helper()
	p, err := OpenPrivate(dir, os.Geteuid(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// foreign makes path another user's: chowned to nobody when we are root
// (as in CI), else by telling p that we are another user, which makes
// everything already there someone else's.
func foreign(t *testing.T, p *PrivateDir, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		p.uid = os.Geteuid() + 1
		return
	}
	if err := os.Lchown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
}

// unchanged fails unless path still holds was.
func unchanged(t *testing.T, path, was string) {
	t.Helper()
	if b, err := os.ReadFile(path); err != nil || string(b) != was {
		t.Fatalf("%s now holds %q (%v), want %q", path, b, err, was)
	}
}

// TestWriteFileCreatesPrivateFiles: under umask 0, directories are 0700
// and files 0600, as created (no chmod after the fact could hide a
// wider mode at creation); a rerun replaces the files, which keep one
// link, and leaves no temporary file behind.
func TestWriteFileCreatesPrivateFiles(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	if createFlags&unix.O_EXCL == 0 || createFlags&unix.O_NOFOLLOW == 0 || createMode != 0o600 {
		t.Fatalf("files are created with flags %#x, mode %o", createFlags, createMode)
	}
	dir := filepath.Join(t.TempDir(), "out")
	for run, data := range []string{"first", "second, shorter"} {
		p := openPrivate(t, dir)
		if err := p.WriteFile("ns/secrets/db.yaml", []byte(data)); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		unchanged(t, filepath.Join(dir, "ns/secrets/db.yaml"), data)
	}
	for rel, mode := range map[string]os.FileMode{".": 0o700, "ns": 0o700, "ns/secrets": 0o700, "ns/secrets/db.yaml": 0o600} {
		st, err := os.Lstat(filepath.Join(dir, rel))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", rel, err, st.Mode().Perm(), mode)
		}
	}
	if st, _ := os.Lstat(filepath.Join(dir, "ns/secrets/db.yaml")); st.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Error("the file has more than one link")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "ns/secrets/.trousseau-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestPrivateDirRefuses: what another user made or could reach on the
// way, or at the file, is refused with its path and what to do, and is
// left as it was.
func TestPrivateDirRefuses(t *testing.T) {
	t.Run("output dir of another user", func(t *testing.T) {
		dir := mkdir(t, filepath.Join(t.TempDir(), "out"), 0o700)
		if os.Geteuid() == 0 {
			os.Chown(dir, 65534, 65534)
		}
		_, err := OpenPrivate(dir, 65534+1, true)
		want(t, "foreign dir", err, dir+" is owned by uid", "not by us (uid 65535)", "remove it, or use another directory")
	})
	t.Run("output dir open to others", func(t *testing.T) {
		dir := mkdir(t, filepath.Join(t.TempDir(), "out"), 0o755)
		_, err := OpenPrivate(dir, os.Geteuid(), true)
		want(t, "0755 dir", err, "has mode 0755", "chmod 0700")
	})
	t.Run("output dir is a symlink", func(t *testing.T) {
		real := mkdir(t, filepath.Join(t.TempDir(), "real"), 0o700)
		link := symlink(t, real, filepath.Join(t.TempDir(), "out"))
		_, err := OpenPrivate(link, os.Geteuid(), true)
		want(t, "symlinked dir", err, link+" is a symlink")
	})
	t.Run("subdir of another user", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		p := openPrivate(t, dir)
		sub := mkdir(t, filepath.Join(dir, "ns"), 0o700)
		foreign(t, p, sub)
		want(t, "foreign subdir", p.WriteFile("ns/secrets/db.yaml", []byte(secret)), sub+" is owned by uid")
		if _, err := os.Lstat(filepath.Join(sub, "secrets")); err == nil {
			t.Error("written into the foreign subdir")
		}
	})
	t.Run("symlink on the way", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		p := openPrivate(t, dir)
		elsewhere := mkdir(t, filepath.Join(t.TempDir(), "elsewhere"), 0o700)
		link := symlink(t, elsewhere, filepath.Join(dir, "ns"))
		want(t, "symlinked subdir", p.WriteFile("ns/db.yaml", []byte(secret)), link+" is a symlink")
		if _, err := os.Lstat(filepath.Join(elsewhere, "db.yaml")); err == nil {
			t.Error("written where the symlink leads")
		}
	})
	t.Run("file of another user", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		p := openPrivate(t, dir)
		file := filepath.Join(dir, "db.yaml")
		os.WriteFile(file, []byte("theirs"), 0o644)
		foreign(t, p, file)
		want(t, "foreign file", p.WriteFile("db.yaml", []byte(secret)), file+" is owned by uid")
		unchanged(t, file, "theirs")
	})
	t.Run("file with two links", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		p := openPrivate(t, dir)
		file := filepath.Join(dir, "db.yaml")
		os.WriteFile(file, []byte("ours"), 0o600)
		other := filepath.Join(t.TempDir(), "kept")
		if err := os.Link(file, other); err != nil {
			t.Fatal(err)
		}
		want(t, "hard link", p.WriteFile("db.yaml", []byte(secret)), file+" has 2 links")
		unchanged(t, other, "ours")
	})
	t.Run("symlink at the file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		p := openPrivate(t, dir)
		target := filepath.Join(t.TempDir(), "target")
		os.WriteFile(target, []byte("theirs"), 0o644)
		link := symlink(t, target, filepath.Join(dir, "db.yaml"))
		want(t, "symlinked file", p.WriteFile("db.yaml", []byte(secret)), link+" is a symlink")
		unchanged(t, target, "theirs")
	})
	t.Run("not a file name", func(t *testing.T) {
		p := openPrivate(t, filepath.Join(t.TempDir(), "out"))
		for _, rel := range []string{"../x", "a//b", "a/./b", "a\x00b"} {
			want(t, rel, p.WriteFile(rel, []byte(secret)), "is not a file name")
		}
	})
	t.Run("missing without create", func(t *testing.T) {
		_, err := OpenPrivate(filepath.Join(t.TempDir(), "out"), os.Geteuid(), false)
		want(t, "missing", err, "does not exist")
	})
}

// TestWriteFileKeepsFewDirectoriesOpen: the handles kept so that a
// directory is opened once for all its files are bounded, however many
// directories are written into, and Close releases them.
func TestWriteFileKeepsFewDirectoriesOpen(t *testing.T) {
	before := openFDs(t)
	p, err := OpenPrivate(filepath.Join(t.TempDir(), "out"), os.Geteuid(), true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxOpenDirs + 50 {
		for _, f := range []string{"a.yaml", "b.yaml"} {
			if err := p.WriteFile(fmt.Sprintf("ns-%d/secrets/%s", i, f), []byte(secret)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := openFDs(t) - before; n > maxOpenDirs+1 {
		t.Errorf("%d file descriptors open after writing into %d directories, want at most %d", n, maxOpenDirs+50, maxOpenDirs+1)
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFDs(t) - before; n > 0 {
		t.Errorf("%d file descriptors left open after Close", n)
	}
	unchanged(t, filepath.Join(p.path, "ns-0/secrets/b.yaml"), secret)
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(fds)
}

// BenchmarkWriteFile writes files spread over 100 directories, as recover
// --out-dir does with Secrets of 100 namespaces.
func BenchmarkWriteFile(b *testing.B) {
	p, err := OpenPrivate(filepath.Join(b.TempDir(), "out"), os.Geteuid(), true)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	data := bytes.Repeat([]byte("x"), 1000)
	for i := 0; b.Loop(); i++ {
		if err := p.WriteFile(fmt.Sprintf("ns-%d/secrets/s-%d.yaml", i%100, i), data); err != nil {
			b.Fatal(err)
		}
	}
}
