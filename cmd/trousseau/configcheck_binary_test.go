package main

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigCheckFailsOnWhatServeRefuses: for each host problem,
// `config check` exits non-zero naming the field and what to do, and
// `serve`, where it refuses the same at start, exits non-zero too.
func TestConfigCheckFailsOnWhatServeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setUp spoils c; <dir> and <state> in want stand for c.dir and
		// c.stateDir.
		setUp func(t *testing.T, c *devCase)
		want  []string
		// serveRefuses: serve exits at start on it (the others leave it
		// up and unable to save a DEK).
		serveRefuses bool
		// withState: a first serve makes the state file before setUp.
		withState bool
	}{
		{"state dir writable by others", func(t *testing.T, c *devCase) {
			must(t, os.Mkdir(c.stateDir, 0o700))
			must(t, os.Chmod(c.stateDir, 0o777))
		}, []string{"stateDir: state dir <state> (owner uid", "mode 0777) is writable by group or others", "chmod go-w <state>"}, true, false},
		{"socket directory writable by others", func(t *testing.T, c *devCase) {
			must(t, os.Mkdir(filepath.Join(c.dir, "sock"), 0o700))
			must(t, os.Chmod(filepath.Join(c.dir, "sock"), 0o777))
			c.edit(t, "socket: "+c.socket, "socket: "+filepath.Join(c.dir, "sock", "kms.sock"))
		}, []string{"socket: socket directory <dir>/sock (owner uid", "is writable by group or others", "chmod go-w <dir>/sock"}, true, false},
		{"state dir under a file", func(t *testing.T, c *devCase) {
			must(t, os.WriteFile(filepath.Join(c.dir, "file"), nil, 0o600))
			c.edit(t, "stateDir: "+c.stateDir, "stateDir: "+filepath.Join(c.dir, "file", "state"))
		}, []string{"stateDir: state dir <dir>/file/state cannot be created: <dir>/file is not a directory"}, true, false},
		{"state dir to be made under a dir others can write", func(t *testing.T, c *devCase) {
			must(t, os.Mkdir(filepath.Join(c.dir, "open"), 0o700))
			must(t, os.Chmod(filepath.Join(c.dir, "open"), 0o777))
			c.edit(t, "stateDir: "+c.stateDir, "stateDir: "+filepath.Join(c.dir, "open", "state"))
		}, []string{"stateDir: state dir <dir>/open/state: <dir>/open, on the way to it", "writable by group or others without the sticky bit"}, true, false},
		{"socket of another running plugin", func(t *testing.T, c *devCase) {
			other := newDevCase(t)
			serveBin(t, other)
			c.edit(t, "socket: "+c.socket, "socket: "+other.socket)
		}, []string{"socket: socket ", "is in use by another Trousseau (pid ", "that does not use this state dir"}, true, false},
		{"state dir of another running plugin", func(t *testing.T, c *devCase) {
			other := newDevCase(t)
			serveBin(t, other)
			c.edit(t, "stateDir: "+c.stateDir, "stateDir: "+other.stateDir)
		}, []string{"stateDir: state dir ", "is in use by another Trousseau (pid ", "that does not serve this socket"}, true, false},
		{"health.listen held by another process", func(t *testing.T, c *devCase) {
			l, err := net.Listen("tcp", c.health)
			must(t, err)
			t.Cleanup(func() { l.Close() })
		}, []string{"health.listen: ", "is in use by another process, and no plugin runs on this config"}, true, false},
		{"state dir is a file", func(t *testing.T, c *devCase) {
			must(t, os.WriteFile(c.stateDir, nil, 0o600))
		}, []string{"stateDir: state dir <state> is not a directory"}, true, false},
		{"state file {}", func(t *testing.T, c *devCase) {
			must(t, os.WriteFile(filepath.Join(c.stateDir, "state.json"), []byte("{}"), 0o600))
		}, []string{"stateDir: state file <state>/state.json holds no Trousseau state", "move it aside and restart"}, true, true},
		{"state file garbage", func(t *testing.T, c *devCase) {
			must(t, os.WriteFile(filepath.Join(c.stateDir, "state.json"), []byte("\x00garbage"), 0o600))
		}, []string{"stateDir: state file <state>/state.json is corrupt", "move it aside and restart"}, true, true},
		{"a file in the way of the socket", func(t *testing.T, c *devCase) {
			must(t, os.WriteFile(c.socket, nil, 0o600))
		}, []string{"socket: socket <dir>/kms.sock: a file that is not a socket is in the way"}, true, false},
		{"health.listen not an address of this host", func(t *testing.T, c *devCase) {
			c.edit(t, "listen: "+c.health, "listen: 8.8.8.8:80")
		}, []string{"health.listen: serve could not listen on 8.8.8.8:80 on this host (bind: cannot assign requested address)"}, true, false},
		{"health.listen host that does not resolve", func(t *testing.T, c *devCase) {
			c.edit(t, "listen: "+c.health, "listen: 999.1.1.1:80")
		}, []string{"health.listen: serve could not listen on 999.1.1.1:80 on this host"}, true, false},
		{"immutable state dir", func(t *testing.T, c *devCase) {
			chattrImmutable(t, c.stateDir)
		}, []string{"stateDir: state dir <state>: no file can be created in it (operation not permitted)"}, false, true},
		{"immutable state file", func(t *testing.T, c *devCase) {
			chattrImmutable(t, filepath.Join(c.stateDir, "state.json"))
		}, []string{"stateDir: state file <state>/state.json cannot be replaced (immutable, operation not permitted)", "no rotation could be saved"}, false, true},
		{"read-only state dir", func(t *testing.T, c *devCase) {
			if out, err := exec.Command("mount", "--bind", "-o", "ro", c.stateDir, c.stateDir).CombinedOutput(); err != nil {
				t.Skipf("read-only bind mount: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", c.stateDir).Run() })
		}, []string{"stateDir: state dir <state>: no file can be created in it (read-only file system)"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDevCase(t)
			if tc.withState {
				serveBin(t, c).stop(t)
			}
			tc.setUp(t, c)
			_, stderr, code := runBin(t, "", "config", "check", "--config", c.config)
			if code == 0 {
				t.Errorf("config check passed")
			}
			for _, w := range tc.want {
				w = strings.NewReplacer("<state>", c.stateDir, "<dir>", c.dir).Replace(w)
				if !strings.Contains(stderr, w) {
					t.Errorf("config check says:\n%s\nwant %q", stderr, w)
				}
			}
			if !tc.serveRefuses {
				return
			}
			s := newBin(t, nil, "serve", "--config", c.config).start(t)
			if st := s.wait(t, 30*time.Second); st.Success() {
				t.Errorf("serve started:\n%s", s.out.String())
			}
		})
	}
}

// TestConfigCheckBesideARunningPluginChangesNothing: `config check`
// on the config of a plugin that serves passes (the health port in use,
// the state dir locked) and changes nothing, not even what serve would
// fix at start; on a config whose directories do not exist yet, it
// creates none.
func TestConfigCheckBesideARunningPluginChangesNothing(t *testing.T) {
	c := newDevCase(t)
	p := serveBin(t, c)
	keyID := keyIDOf(t, c.socket)
	state := filepath.Join(c.stateDir, "state.json")
	must(t, os.Chmod(state, 0o644))
	must(t, os.WriteFile(filepath.Join(c.stateDir, ".state-123.tmp"), []byte("{"), 0o600))
	before := snapshotTree(t, c.dir)
	out, stderr, code := runBin(t, "", "config", "check", "--config", c.config)
	if code != 0 {
		t.Fatalf("config check beside the plugin: exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{
		"state dir " + c.stateDir + ": current DEK " + keyID,
		"note: a plugin runs on this config (pid ",
		"note: state file " + state + " has mode 0644: serve makes it 0600 at start",
		"note: 1 temporary state file(s) of an interrupted save",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config check lacks %q:\n%s", want, out)
		}
	}
	if after := snapshotTree(t, c.dir); after != before {
		t.Errorf("config check changed the files:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	p.stop(t)

	c.edit(t, "stateDir: "+c.stateDir, "stateDir: "+filepath.Join(c.dir, "new", "state"))
	c.edit(t, "socket: "+c.socket, "socket: "+filepath.Join(c.dir, "run", "kms.sock"))
	before = snapshotTree(t, c.dir)
	out, stderr, code = runBin(t, "", "config", "check", "--config", c.config)
	if code != 0 || !strings.Contains(out, "does not exist yet; serve creates it") {
		t.Errorf("config check of directories to be made: exit %d\n%s%s", code, out, stderr)
	}
	if after := snapshotTree(t, c.dir); after != before {
		t.Errorf("config check changed the files:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// snapshotTree lists every file under dir with its type, mode, size and
// modification time.
func snapshotTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s %d %d\n", path, info.Mode(), info.Size(), info.ModTime().UnixNano())
		return nil
	})
	must(t, err)
	return b.String()
}

// From another pid namespace (a debug pod sharing the static pod's host
// paths and network), /proc/locks does not show the plugin's locks: config
// check cannot tell who serves, and must not fail on the plugin's own
// socket and address.
func TestConfigCheckFromAnotherPIDNamespace(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1) here")
	}
	c := newDevCase(t)
	serveBin(t, c)
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", buildBinary(t), "config", "check", "--config", c.config)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "unshare failed") || strings.Contains(string(out), "unshare: ") {
		t.Skipf("no new pid namespace here: %s", out)
	}
	if err != nil {
		t.Fatalf("config check beside the plugin, from another pid namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "note: health.listen "+c.health+" is in use") {
		t.Fatalf("no note on the address in use:\n%s", out)
	}
}
