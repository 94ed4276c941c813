package envelope

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stateDirWithDEK is a state dir holding a real current DEK, made with
// backends.
func stateDirWithDEK(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	mustNew(t, cfg)
	return cfg.StateDir
}

// TestCheckStateDirAgreesWithNew: for every state file New refuses,
// CheckStateDir fails with the same message, and it passes those New
// takes. (New is what serve runs at start.)
func TestCheckStateDirAgreesWithNew(t *testing.T) {
	cfg := Config{Threshold: 2, Backends: newLocals(t, 3)}
	good, err := os.ReadFile(filepath.Join(stateDirWithDEK(t, cfg), stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, content string }{
		{"a state file", string(good)},
		{"{}", "{}"},
		{"null", "null"},
		{"garbage", "\x00garbage"},
		{"another version", `{"version": 2, "header": "AAAA"}`},
		{"no header", `{"version": 1}`},
		{"a header that does not parse", `{"version": 1, "header": "AAAA"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, checkErr := CheckStateDir(dir)
			c := cfg
			c.StateDir = dir
			_, newErr := New(c)
			if (checkErr == nil) != (newErr == nil) || (newErr != nil && checkErr.Error() != newErr.Error()) {
				t.Fatalf("CheckStateDir: %v\nNew: %v", checkErr, newErr)
			}
			if checkErr == nil && (got.Current == nil || !got.Exists) {
				t.Errorf("CheckStateDir found no DEK: %+v", got)
			}
		})
	}
}

// TestCheckStateDirChangesNothing: what serve fixes at start (a state
// file open to others, temporary files left by a crash) is noted, not
// fixed, and no lock file is made.
func TestCheckStateDirChangesNothing(t *testing.T) {
	dir := stateDirWithDEK(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	state := filepath.Join(dir, stateFileName)
	leftover := filepath.Join(dir, ".state-42.tmp")
	aside := state + ".unusable-20260101T000000Z-1"
	for _, f := range []string{leftover, aside} {
		if err := os.WriteFile(f, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(state, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := CheckStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(got.Notes, "\n")
	for _, want := range []string{"has mode 0644: serve makes it 0600", "1 temporary state file(s)", "1 DEK(s) set aside", aside} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if st, err := os.Stat(state); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("state file mode changed: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Errorf("leftover removed: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "state")
	if got, err := CheckStateDir(missing); err != nil || got.Exists {
		t.Errorf("missing dir: %+v %v", got, err)
	}
	if _, err := os.Lstat(missing); !os.IsNotExist(err) {
		t.Errorf("CheckStateDir created %s: %v", missing, err)
	}
}

// TestCheckStateDirRefuses: what serve would refuse, or where it could
// save no DEK.
func TestCheckStateDirRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setUp func(t *testing.T, dir string) // dir exists, 0700, empty
		want  string
	}{
		{"writable by others", func(t *testing.T, dir string) { mustNoErr(t, os.Chmod(dir, 0o777)) }, "is writable by group or others"},
		{"lock file a directory", func(t *testing.T, dir string) { mustNoErr(t, os.Mkdir(filepath.Join(dir, ".lock"), 0o700)) }, "lock file " + "<dir>/.lock is a directory, not a regular file"},
		{"lock file a symlink", func(t *testing.T, dir string) {
			mustNoErr(t, os.Symlink("/etc/passwd", filepath.Join(dir, ".lock")))
		}, "is a symlink, not a regular file"},
		{"state file a symlink", func(t *testing.T, dir string) {
			mustNoErr(t, os.Symlink("/etc/passwd", filepath.Join(dir, stateFileName)))
		}, "is a symlink; the state dir must hold the file itself"},
		{"immutable", func(t *testing.T, dir string) { makeImmutable(t, dir) }, "<dir>: no file can be created in it (operation not permitted)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			mustNoErr(t, os.Mkdir(dir, 0o700))
			tc.setUp(t, dir)
			_, err := CheckStateDir(dir)
			if want := strings.ReplaceAll(tc.want, "<dir>", dir); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("CheckStateDir: %v, want %q", err, want)
			}
		})
	}

	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state")
		mustNoErr(t, os.WriteFile(file, nil, 0o600))
		if _, err := CheckStateDir(file); err == nil || !strings.Contains(err.Error(), "is not a directory but a regular file") {
			t.Fatalf("CheckStateDir: %v", err)
		}
		// Under a file: missing, and the caller's check of its parents
		// says why it cannot be created.
		if got, err := CheckStateDir(filepath.Join(file, "sub")); err != nil || got.Exists {
			t.Fatalf("CheckStateDir under a file: %+v %v", got, err)
		}
	})

	t.Run("immutable state file", func(t *testing.T) {
		dir := stateDirWithDEK(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
		makeImmutable(t, filepath.Join(dir, stateFileName))
		if _, err := CheckStateDir(dir); err == nil || !strings.Contains(err.Error(), "cannot be replaced (immutable, operation not permitted)") {
			t.Fatalf("CheckStateDir: %v", err)
		}
	})

	// A read-only mode does not stop a save, which renames over the file.
	t.Run("read-only state file passes", func(t *testing.T) {
		dir := stateDirWithDEK(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
		mustNoErr(t, os.Chmod(filepath.Join(dir, stateFileName), 0o400))
		if _, err := CheckStateDir(dir); err != nil {
			t.Fatalf("CheckStateDir: %v", err)
		}
	})

	t.Run("locked by a running plugin passes", func(t *testing.T) {
		dir := stateDirWithDEK(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
		lock, err := LockStateDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Close()
		if _, err := CheckStateDir(dir); err != nil {
			t.Fatal(err)
		}
	})
}

// makeImmutable makes path immutable until the test ends (root cannot
// write it either), or skips the test where chattr is not allowed.
func makeImmutable(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s: %v %s", path, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("chattr", "-i", path).CombinedOutput(); err != nil {
			t.Errorf("chattr -i %s: %v %s", path, err, out)
		}
	})
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
