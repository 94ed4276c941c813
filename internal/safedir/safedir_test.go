package safedir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode os.FileMode
		ours bool
		want string // "" accepted
	}{
		{"0700", 0o700, true, ""},
		{"0755", 0o755, true, ""},
		{"group-writable", 0o770, true, "chmod go-w"},
		{"world-writable", 0o757, false, "chmod go-w"},
		{"sticky like /tmp", 0o777 | os.ModeSticky, false, "1777"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := Check("test dir", dir, tc.ours)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if os.Geteuid() == 0 {
		dir := t.TempDir()
		os.Chown(dir, 65534, 65534)
		if err := Check("test dir", dir, true); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("another user's dir: %v", err)
		}
		if err := Check("test dir", dir, false); err != nil {
			t.Fatalf("another user's dir when the owner is not judged: %v", err)
		}
	}
}

// mkdir makes dir with mode (chmod'ed: the umask does not apply).
func mkdir(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}

func want(t *testing.T, what string, err error, substrings ...string) {
	t.Helper()
	if len(substrings) == 0 {
		if err != nil {
			t.Fatalf("%s: refused: %v", what, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s: accepted, want an error with %q", what, substrings)
	}
	for _, s := range substrings {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("%s: %v, want %q", what, err, s)
		}
	}
}

// TestCheckWay: a directory that is safe itself is refused when a
// directory on the way to it could be written by someone else (who could
// swap it), unless that one is shared with the sticky bit and what is in
// it on the way is ours; the way through a symlink counts, and where it
// leads.
func TestCheckWay(t *testing.T) {
	base := t.TempDir()
	open := mkdir(t, filepath.Join(base, "open"), 0o777)
	under := mkdir(t, filepath.Join(open, "d"), 0o700)
	deep := mkdir(t, filepath.Join(under, "deeper"), 0o700)
	sticky := mkdir(t, filepath.Join(base, "sticky"), 0o777|os.ModeSticky)
	inSticky := mkdir(t, filepath.Join(sticky, "d"), 0o700)
	safe := mkdir(t, filepath.Join(base, "safe"), 0o755)
	private := mkdir(t, filepath.Join(safe, "private"), 0o700)
	openLeaf := mkdir(t, filepath.Join(safe, "open-leaf"), 0o777)

	for _, ours := range []bool{true, false} {
		want(t, "under a world-writable dir", Check("test dir", under, ours), "test dir "+under+": "+open+", on the way to it", "mode 0777", "chmod go-w "+open)
		want(t, "two levels under a world-writable dir", Check("test dir", deep, ours), "chmod go-w "+open)
		want(t, "in a sticky dir", Check("test dir", inSticky, ours))
		want(t, "private dir", Check("test dir", private, ours))
		want(t, "a symlink to a dir under a world-writable dir", Check("test dir", symlink(t, under, filepath.Join(safe, fmt.Sprintf("link-%v", ours))), ours), "chmod go-w "+open)
		want(t, "a path through a symlinked dir", Check("test dir", filepath.Join(symlink(t, open, filepath.Join(safe, fmt.Sprintf("open-link-%v", ours))), "d"), ours), "chmod go-w "+open)
		want(t, "a symlink to a world-writable dir", Check("test dir", symlink(t, openLeaf, filepath.Join(private, fmt.Sprintf("leaf-%v", ours))), ours), "which is "+openLeaf+" with symlinks resolved", "chmod go-w "+openLeaf)
		want(t, "a symlink in a world-writable dir", Check("test dir", symlink(t, private, filepath.Join(openLeaf, fmt.Sprintf("to-private-%v", ours))), ours), openLeaf+", on the way to it")
		want(t, "relative symlink with ..", Check("test dir", symlink(t, "../open/d", filepath.Join(safe, fmt.Sprintf("rel-%v", ours))), ours), "chmod go-w "+open)
	}
	want(t, "missing", Check("test dir", filepath.Join(private, "none"), true), "test dir: ", "no such file")
	loop := symlink(t, filepath.Join(safe, "loop"), filepath.Join(safe, "loop"))
	want(t, "a symlink loop", Check("test dir", loop, true), "too many levels of symbolic links")
}

// TestCheckWayOwners (as root only: it makes files of other users): a
// directory on the way owned by someone else than root, this process's
// user or (not ours) the directory's owner is refused; so is a symlink of
// another user's in a sticky dir.
func TestCheckWayOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	const other, custodian = 65534, 65533
	base := t.TempDir()
	chown := func(p string, uid int) string {
		t.Helper()
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	theirs := chown(mkdir(t, filepath.Join(base, "theirs"), 0o755), other)
	inTheirs := mkdir(t, filepath.Join(theirs, "d"), 0o700)
	want(t, "under another user's dir", Check("test dir", inTheirs, true), theirs+", on the way to it, is owned by uid 65534", "chown root "+theirs)
	chown(inTheirs, other)
	want(t, "another user's dir under their own dir, not ours to own", Check("test dir", inTheirs, false))
	want(t, "another user's dir under their own dir, ours to own", Check("test dir", inTheirs, true), "owned by uid 65534")
	custodians := chown(mkdir(t, filepath.Join(theirs, "c"), 0o700), custodian)
	want(t, "a third user's dir under another's", Check("test dir", custodians, false), "owned by uid 65534, not by root, uid 0 (this process) or uid 65533")

	sticky := mkdir(t, filepath.Join(base, "sticky"), 0o777|os.ModeSticky)
	mine := mkdir(t, filepath.Join(base, "mine"), 0o700)
	link := chown(symlink(t, mine, filepath.Join(sticky, "link")), other)
	want(t, "another user's symlink in a sticky dir", Check("test dir", link, true), link+" is owned by uid 65534", "in the shared directory "+sticky)
	hers := chown(mkdir(t, filepath.Join(sticky, "hers"), 0o700), other)
	want(t, "another user's dir in a sticky dir, not ours to own", Check("test dir", hers, false))
}

// TestCheckFile: a file (a socket) is judged by the directory it is in,
// where symlinks lead, with the directories of the symlinks and the ones
// on the way; the file itself need not exist.
func TestCheckFile(t *testing.T) {
	base := t.TempDir()
	safe := mkdir(t, filepath.Join(base, "safe"), 0o700)
	other := mkdir(t, filepath.Join(base, "other"), 0o755)
	open := mkdir(t, filepath.Join(base, "open"), 0o777)
	openSub := mkdir(t, filepath.Join(open, "sub"), 0o700)
	sticky := mkdir(t, filepath.Join(base, "sticky"), 0o777|os.ModeSticky)
	for _, f := range []string{filepath.Join(other, "real.sock"), filepath.Join(open, "real.sock"), filepath.Join(openSub, "real.sock")} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, ours := range []bool{true, false} {
		check := func(file string) error { return CheckFile("custodian socket", file, ours) }
		want(t, "a file in a private dir", check(filepath.Join(safe, "s.sock")))
		want(t, "a missing file in a private dir", check(filepath.Join(safe, "none.sock")))
		want(t, "a file in a world-writable dir", check(filepath.Join(open, "real.sock")), "custodian socket "+open+"/real.sock: its directory "+open+" (owner uid", "mode 0777", "chmod go-w "+open)
		want(t, "a file in a sticky dir", check(filepath.Join(sticky, "x.sock")), "mode 1777")
		link := func(target, name string) string {
			return symlink(t, target, filepath.Join(safe, fmt.Sprintf("%s-%v", name, ours)))
		}
		want(t, "a symlink to a file in a safe dir", check(link(filepath.Join(other, "real.sock"), "ok")))
		want(t, "a symlink to a file in a world-writable dir", check(link(filepath.Join(open, "real.sock"), "s.sock")),
			"its directory "+open+" (reached through the symlink "+safe, "; owner uid", "chmod go-w "+open)
		want(t, "a symlink to a missing file in a world-writable dir", check(link(filepath.Join(open, "none.sock"), "none")), "chmod go-w "+open)
		want(t, "a symlink to a file under a world-writable dir", check(link(filepath.Join(openSub, "real.sock"), "sub")), open+", on the way to it (reached through the symlink", "chmod go-w "+open)
		want(t, "a path through a symlinked world-writable dir", check(filepath.Join(link(open, "dir"), "sub", "real.sock")), "chmod go-w "+open)
		inOpen := symlink(t, filepath.Join(other, "real.sock"), filepath.Join(open, fmt.Sprintf("link-%v", ours)))
		want(t, "a symlink in a world-writable dir", check(inOpen), "the directory of the symlink "+inOpen, "chmod go-w "+open)
		want(t, "a missing dir", check(filepath.Join(safe, "none", "s.sock")), "custodian socket: ", "no such file")
	}
}

// CheckCreatable judges a directory not made yet by the directories on
// the way to it, as Check will once it is made.
func TestCheckCreatable(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	sticky := filepath.Join(base, "sticky")
	for dir, mode := range map[string]os.FileMode{open: 0o777, sticky: 0o777 | os.ModeSticky} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"under a safe dir", filepath.Join(base, "new", "deeper"), ""},
		{"under a sticky shared dir", filepath.Join(sticky, "new"), ""},
		{"under a dir others can write", filepath.Join(open, "new"), "writable by group or others without the sticky bit"},
		{"deeper under it", filepath.Join(open, "a", "b"), "writable by group or others without the sticky bit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCreatable("state dir", tc.dir)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("CheckCreatable = %v, want %q", err, tc.want)
			}
			if tc.want != "" {
				// Check agrees once the directory exists.
				if err := os.MkdirAll(tc.dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := Check("state dir", tc.dir, true); err == nil {
					t.Fatal("Check accepts what CheckCreatable refused")
				}
			}
		})
	}
}
