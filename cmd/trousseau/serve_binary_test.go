package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// TestUnusableStoredDEKIsSetAsideAndReplaced: two of the three key
// files replaced while the plugin is stopped. At restart every backend
// answers, so it makes a new DEK and serves; the log's ERROR names the
// old DEK and which backends refused their share, the old state is kept
// aside, the metric counts it, and `status` shows the new DEK. Data sealed
// before fails to read, with the reason in the log.
func TestUnusableStoredDEKIsSetAsideAndReplaced(t *testing.T) {
	c := newDevCase(t)
	p := serveBin(t, c)
	old := keyIDOf(t, c.socket)
	sealed, stderr, code := runBin(t, "a dek seed, 32 bytes or fewer", "encrypt", "--socket", c.socket)
	if code != 0 {
		t.Fatalf("encrypt: %d %s", code, stderr)
	}
	p.stop(t)
	for _, name := range []string{"local-a", "local-b"} {
		must(t, os.Remove(keyPath(c.dir, name)))
		if _, stderr, code := runBin(t, "", "keygen", keyPath(c.dir, name)); code != 0 {
			t.Fatalf("keygen: %s", stderr)
		}
	}

	p = serveBin(t, c)
	current := waitKeyID(t, p, c.socket, func(k string) bool { return k != old })
	errLine := waitLine(t, p, "level=ERROR", "the stored current DEK cannot be unlocked although every backend answered")
	for _, want := range []string{old, "local-a", "local-b", "unreadable"} {
		if !strings.Contains(errLine, want) {
			t.Errorf("the ERROR line does not name %q:\n%s", want, errLine)
		}
	}
	if _, cause, _ := strings.Cut(errLine, "cause="); strings.Contains(cause, "local-c:") {
		t.Errorf("the ERROR line blames local-c, whose key did not change:\n%s", errLine)
	}
	aside, _ := filepath.Glob(filepath.Join(c.stateDir, "state.json.unusable-*"))
	if len(aside) != 1 {
		t.Fatalf("state set aside: %v", aside)
	}
	if raw, err := os.ReadFile(aside[0]); err != nil || !strings.Contains(string(raw), old) {
		t.Errorf("%s does not hold the old DEK %s: %v", aside[0], old, err)
	}
	waitLine(t, p, "level=ERROR", "the unusable DEK's state is kept", aside[0])
	if v := metric(t, c.health, "trousseau_dek_unusable_total"); v != "1" {
		t.Errorf("trousseau_dek_unusable_total = %q, want 1", v)
	}
	if st := statusOf(t, c.socket); !strings.Contains(st, "healthz: ok") || !strings.Contains(st, current) {
		t.Errorf("status:\n%s\nwant key_id %s", st, current)
	}
	detail, _, err := run(t, "", "status", "--socket", c.socket, "--health", c.health)
	if err != nil || !strings.Contains(detail, "current DEK: "+current+", generation") || !strings.Contains(detail, "made here") {
		t.Errorf("status --health: %v\n%s", err, detail)
	}

	// Data sealed under the old DEK: an error for the caller, the reason
	// (which backends) in the log.
	_, stderr, code = runBin(t, sealed, "decrypt", "--socket", c.socket)
	if code == 0 || !strings.Contains(stderr, "InvalidArgument") {
		t.Errorf("decrypt of data sealed under the lost DEK: exit %d, %s", code, stderr)
	}
	waitLine(t, p, `msg="request failed"`, "Decrypt", "local-a", "local-b")
	// New writes work.
	if sealed, _, code := runBin(t, "new data", "encrypt", "--socket", c.socket); code != 0 {
		t.Error("encrypt under the new DEK failed")
	} else if plain, stderr, _ := runBin(t, sealed, "decrypt", "--socket", c.socket); plain != "new data" {
		t.Errorf("decrypt under the new DEK: %q %s", plain, stderr)
	}
	p.stop(t)
}

// TestRestartWithASpoiledKeyFileServes: 2 of 3 with state,
// one key file spoiled while stopped: the process starts and serves the
// same DEK on the other two, and its log names the backend and the fault.
func TestRestartWithASpoiledKeyFileServes(t *testing.T) {
	for _, tc := range testutil.SpoiledKeyFiles {
		t.Run(tc.Name, func(t *testing.T) {
			c := newDevCase(t)
			p := serveBin(t, c)
			before := keyIDOf(t, c.socket)
			p.stop(t)
			bad := keyPath(c.dir, "local-c")
			must(t, tc.Spoil(bad))

			p = serveBin(t, c)
			if after := keyIDOf(t, c.socket); after != before {
				t.Errorf("key_id after the restart %s, before %s", after, before)
			}
			waitLine(t, p, "level=WARN", `msg="backend down" backend=local-c`, bad+" "+tc.Want)
			if v := metric(t, c.health, `trousseau_backend_up{backend="local-c"}`); v != "0" {
				t.Errorf(`trousseau_backend_up{backend="local-c"} = %q`, v)
			}
			p.stop(t)
		})
	}
}

// TestBackendStateChangesAreLoggedOnceWithTheCause: a key file lost
// or spoiled while the plugin serves gives one WARN with the file and
// the cause, however many probes see it, and one INFO when it is back.
func TestBackendStateChangesAreLoggedOnceWithTheCause(t *testing.T) {
	for _, tc := range []struct {
		name           string
		spoil, restore func(path string) error
		want           string
	}{
		{"deleted", func(p string) error { return os.Rename(p, p+".away") }, func(p string) error { return os.Rename(p+".away", p) }, "no such file or directory"},
		{"world-readable", func(p string) error { return os.Chmod(p, 0o644) }, func(p string) error { return os.Chmod(p, 0o600) }, "has mode 0644"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDevCase(t)
			c.edit(t, "level: info", "level: debug")
			p := serveBin(t, c)
			key := keyPath(c.dir, "local-c")
			must(t, tc.spoil(key))
			waitLine(t, p, "level=WARN", `msg="backend down" backend=local-c`, key, tc.want)
			time.Sleep(probes)
			if n := len(logLines(p.out.String(), `msg="backend down"`)); n != 1 {
				t.Errorf("backend down logged %d times, want once:\n%s", n, p.out.String())
			}
			must(t, tc.restore(key))
			waitLine(t, p, "level=INFO", `msg="backend up again" backend=local-c`)
			time.Sleep(probes)
			if n := len(logLines(p.out.String(), `msg="backend up again"`)); n != 1 {
				t.Errorf("backend up again logged %d times, want once:\n%s", n, p.out.String())
			}
			p.stop(t)
		})
	}
}

// TestSecondPluginOnAStateDirIsRefused: a second serve on the state dir
// of a running plugin exits 1 naming the lock's holder, and the first
// plugin keeps running.
func TestSecondPluginOnAStateDirIsRefused(t *testing.T) {
	c := newDevCase(t)
	first := serveBin(t, c)
	c.edit(t, "socket: "+c.socket, "socket: "+filepath.Join(c.dir, "second.sock"))
	c.edit(t, "listen: "+c.health, "listen: 127.0.0.1:0")
	second := newBin(t, nil, "serve", "--config", c.config).start(t)
	st := second.wait(t, 20*time.Second)
	want := fmt.Sprintf("state dir %s is in use by another Trousseau (lock %s/.lock is held by another process (pid %d))", c.stateDir, c.stateDir, first.cmd.Process.Pid)
	if st.ExitCode() != 1 || !strings.Contains(second.out.String(), want) {
		t.Errorf("second plugin on the state dir: %v\n%s\nwant %q", st, second.out.String(), want)
	}
	if !first.running() {
		t.Errorf("the first plugin ended")
	}
	first.stop(t)
}

// TestStartUpCleansTheStateDir: serve removes a temporary state file
// left by an interrupted save and makes a 0644 state file 0600, saying
// so in the log.
func TestStartUpCleansTheStateDir(t *testing.T) {
	c := newDevCase(t)
	serveBin(t, c).stop(t)
	state := filepath.Join(c.stateDir, "state.json")
	leftover := filepath.Join(c.stateDir, ".state-4242.tmp")
	must(t, os.WriteFile(leftover, []byte("{"), 0o600))
	must(t, os.Chmod(state, 0o644))
	p := serveBin(t, c)
	waitLine(t, p, "removed a temporary state file left by an interrupted save", leftover)
	waitLine(t, p, "level=WARN", "made it 0600", state)
	if _, err := os.Stat(leftover); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s left: %v", leftover, err)
	}
	if st, err := os.Stat(state); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode after start: %v %v", st.Mode(), err)
	}
	p.stop(t)
}
