package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// Operator reliability tests that drive the real binary, for what only
// the process shows: that it starts or refuses to, its exit code, its log
// lines, what `status` and /metrics say, signals. The in-process tests
// (operator_test.go) cover the messages in more variants.
//
// Each test runs the dev mode's three key-file backends, 2 of 3, from a
// config file in a short directory under /tmp (a socket's path is
// limited), probing every second, on a health port of its own.

// devCase is a dev-mode set-up, not served yet.
type devCase struct {
	dir      string // keys/, config.yaml, the socket
	config   string
	socket   string
	stateDir string
	health   string // health.listen, a fixed port so that tests can scrape it
}

// newDevCase writes the dev mode's key files and config, probing every
// second on a free health port.
func newDevCase(t *testing.T) *devCase {
	t.Helper()
	dir := devSetUp(t)
	c := &devCase{dir: dir, config: filepath.Join(dir, "config.yaml"), socket: filepath.Join(dir, "kms.sock"),
		stateDir: filepath.Join(dir, "state"), health: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}
	c.edit(t, "listen: 127.0.0.1:0", "listen: "+c.health)
	c.edit(t, "probeInterval: 30s", "probeInterval: 1s")
	c.edit(t, "probeTimeout: 5s", "probeTimeout: 1s")
	return c
}

// edit replaces from with to in the config, which must hold it.
func (c *devCase) edit(t *testing.T, from, to string) {
	t.Helper()
	raw, err := os.ReadFile(c.config)
	must(t, err)
	if !strings.Contains(string(raw), from) {
		t.Fatalf("test setup: %q not in\n%s", from, raw)
	}
	must(t, os.WriteFile(c.config, []byte(strings.Replace(string(raw), from, to, 1)), 0o600))
}

// bin is a trousseau process run by a test.
type bin struct {
	cmd    *exec.Cmd
	out    *tap // stdout and stderr
	exited chan struct{}
}

// tap keeps what a process writes, and tells when a string first shows.
type tap struct {
	testutil.Buffer
	mu    sync.Mutex
	watch map[string]chan struct{}
}

func (w *tap) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.watch) > 0 {
		s := w.Buffer.String()
		for want, ch := range w.watch {
			if strings.Contains(s, want) {
				close(ch)
				delete(w.watch, want)
			}
		}
	}
	return n, err
}

// when is closed once the output holds s. Call it before the process starts.
func (w *tap) when(s string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.watch == nil {
		w.watch = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	w.watch[s] = ch
	return ch
}

// newBin prepares `trousseau ARGS` with the test's environment plus env;
// start runs it.
func newBin(t *testing.T, env []string, args ...string) *bin {
	t.Helper()
	b := &bin{out: &tap{}, exited: make(chan struct{})}
	b.cmd = exec.Command(buildBinary(t), args...)
	b.cmd.Env = append(os.Environ(), env...)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	return b
}

// start starts it; the test's end stops it (SIGTERM, then SIGKILL).
func (b *bin) start(t *testing.T) *bin {
	t.Helper()
	must(t, b.cmd.Start())
	go func() { b.cmd.Wait(); close(b.exited) }()
	t.Cleanup(func() {
		select {
		case <-b.exited:
			return
		default:
		}
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(20 * time.Second):
			b.cmd.Process.Kill()
			<-b.exited
		}
	})
	return b
}

// wait waits for the process to end by itself.
func (b *bin) wait(t *testing.T, d time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-b.exited:
		return b.cmd.ProcessState
	case <-time.After(d):
		t.Fatalf("%v still running after %s:\n%s", b.cmd.Args[1:], d, b.out.String())
		return nil
	}
}

// stop ends it with SIGTERM, as kubelet does, and requires a clean exit.
func (b *bin) stop(t *testing.T) {
	t.Helper()
	b.cmd.Process.Signal(syscall.SIGTERM)
	if st := b.wait(t, 20*time.Second); !st.Success() {
		t.Fatalf("exit after SIGTERM: %v\n%s", st, b.out.String())
	}
}

func (b *bin) running() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// diedOf reports whether st is the end of a process killed by sig.
func diedOf(st *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// serveBin runs `serve --config` on c until the test ends, and waits
// until kube-apiserver's Status would say ok.
func serveBin(t *testing.T, c *devCase) *bin {
	t.Helper()
	b := newBin(t, nil, "serve", "--config", c.config).start(t)
	waitServing(t, b, c.socket)
	return b
}

func waitServing(t *testing.T, b *bin, socket string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err := run(t, "", "status", "--socket", socket, "--health", "")
		if err == nil && strings.Contains(out, "healthz: ok") {
			return
		}
		if !b.running() {
			t.Fatalf("serve exited (%v):\n%s", b.cmd.ProcessState, b.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy (%v, %s):\n%s", err, out, b.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runBin runs `trousseau ARGS` to its end (at most a minute) with stdin,
// and returns its output and exit code.
func runBin(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v\n%s%s", args, err, o.String(), e.String())
	}
	return o.String(), e.String(), code
}

// keyIDOf is the key_id the plugin on socket reports.
func keyIDOf(t *testing.T, socket string) string {
	t.Helper()
	m := regexp.MustCompile(`key_id:\s+(\S+)`).FindStringSubmatch(statusOf(t, socket))
	if m == nil {
		t.Fatalf("no key_id in status:\n%s", statusOf(t, socket))
	}
	return m[1]
}

// waitKeyID waits until the key_id passes ok.
func waitKeyID(t *testing.T, b *bin, socket string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, err := run(t, "", "status", "--socket", socket, "--health", "")
		if m := regexp.MustCompile(`key_id:\s+(\S+)`).FindStringSubmatch(out); err == nil && m != nil && ok(m[1]) {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("key_id never as wanted (%v):\n%s\nlog:\n%s", err, out, b.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric is the value of an unlabelled or fully labelled series on
// /metrics, "" if absent.
func metric(t *testing.T, health, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + health + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}

// logLines are the lines of out that hold every one of want.
func logLines(out string, want ...string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		all := true
		for _, w := range want {
			all = all && strings.Contains(l, w)
		}
		if all {
			lines = append(lines, l)
		}
	}
	return lines
}

// waitLine waits for a line of b's output holding every one of want.
func waitLine(t *testing.T, b *bin, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if l := logLines(b.out.String(), want...); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", want, b.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probes is how long a few of the tests' one-second probes take: a line
// logged at each probe would show that often.
const probes = 3500 * time.Millisecond

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

// TestUnsavableRotationIsLoggedOnceAndShown: a rotation (SIGHUP)
// whose state cannot be saved is postponed with a WARN that says why,
// once however many probes retry it; the plugin keeps serving its
// current DEK; the rotation happens once the cause is gone.
//
// The `status` warning of a rotation overdue appears only after
// grpcserver.RotationOverdue (10 minutes), too long for this test: what
// `status` shows here is the DEK kept and healthz ok, and the postponed
// counter. grpcserver's tests cover the warning itself.
func TestUnsavableRotationIsLoggedOnceAndShown(t *testing.T) {
	for _, tc := range []struct {
		name string
		// block stops the state from being saved, and returns the undo.
		block func(t *testing.T, stateDir string) func()
		cause string
	}{
		{"a directory where the state file goes", func(t *testing.T, stateDir string) func() {
			// Root-proof: rename(2) never replaces a non-empty directory
			// with a file.
			state := filepath.Join(stateDir, "state.json")
			must(t, os.Rename(state, state+".saved"))
			must(t, os.MkdirAll(filepath.Join(state, "x"), 0o700))
			return func() {
				must(t, os.RemoveAll(state))
				must(t, os.Rename(state+".saved", state))
			}
		}, "replace state file <state>"},
		{"immutable state file", func(t *testing.T, stateDir string) func() {
			return chattrImmutable(t, filepath.Join(stateDir, "state.json"))
		}, "replace state file <state>: operation not permitted"},
		{"immutable state dir", func(t *testing.T, stateDir string) func() {
			return chattrImmutable(t, stateDir)
		}, "state file <state>: operation not permitted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDevCase(t)
			p := serveBin(t, c)
			before := keyIDOf(t, c.socket)
			undo := tc.block(t, c.stateDir)
			must(t, p.cmd.Process.Signal(syscall.SIGHUP))
			cause := strings.ReplaceAll(tc.cause, "<state>", filepath.Join(c.stateDir, "state.json"))
			warn := waitLine(t, p, "level=WARN", `msg="DEK rotation postponed; the current DEK stays in use"`)
			if !strings.Contains(warn, cause) || !strings.Contains(warn, "requested by operator") {
				t.Errorf("the WARN does not give the cause %q:\n%s", cause, warn)
			}
			time.Sleep(probes) // a few retries, each failing alike
			if n := len(logLines(p.out.String(), `msg="DEK rotation postponed`)); n != 1 {
				t.Errorf("the postponed rotation was logged %d times, want once per cause:\n%s", n, p.out.String())
			}
			if n, _ := strconv.Atoi(metric(t, c.health, `trousseau_dek_rotations_total{result="postponed"}`)); n < 2 {
				t.Errorf("postponed rotations counted: %d, want one per retry", n)
			}
			detail, _, err := run(t, "", "status", "--socket", c.socket, "--health", c.health)
			if err != nil || !strings.Contains(detail, "healthz: ok") || !strings.Contains(detail, "current DEK: "+before) {
				t.Errorf("while the rotation waits, status should show the current DEK still serving: %v\n%s", err, detail)
			}

			undo()
			waitLine(t, p, `msg="postponed DEK rotation no longer pending"`)
			waitKeyID(t, p, c.socket, func(k string) bool { return k != before })
			p.stop(t)
		})
	}
}

// chattrImmutable makes path immutable for the test (root cannot write
// it either), or skips the test when the file system or the container
// does not allow it.
func chattrImmutable(t *testing.T, path string) func() {
	t.Helper()
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s: %v %s", path, err, out)
	}
	var once sync.Once
	undo := func() {
		once.Do(func() {
			if out, err := exec.Command("chattr", "-i", path).CombinedOutput(); err != nil {
				t.Errorf("chattr -i %s: %v %s", path, err, out)
			}
		})
	}
	t.Cleanup(undo)
	return undo
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

// TestExitCodesAndStderr: a handful of error messages as an
// operator meets them: the exit code and stderr of the command.
func TestExitCodesAndStderr(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setUp edits c and returns stdin and the arguments.
		setUp         func(t *testing.T, c *devCase) (string, []string)
		want, notWant string
	}{
		{"duration as a bare integer", func(t *testing.T, c *devCase) (string, []string) {
			c.edit(t, "probeInterval: 1s", "probeInterval: 30")
			return "", []string{"config", "check", "--config", c.config}
		}, `health.probeInterval: want a duration with its unit such as "30s", got the bare number 30`, ""},
		{"17 backends", func(t *testing.T, c *devCase) (string, []string) {
			var more strings.Builder
			for i := range 14 {
				fmt.Fprintf(&more, "- name: more-%d\n  local: {keyFile: %s}\n", i, keyPath(c.dir, fmt.Sprint(i)))
			}
			c.edit(t, "backends:\n", "backends:\n"+more.String())
			return "", []string{"serve", "--config", c.config}
		}, "backends: at most 16 backends, got 17", "threshold"},
		{"socket path over the unix limit", func(t *testing.T, c *devCase) (string, []string) {
			return "", []string{"serve", "--dev", "--socket", filepath.Join(c.dir, strings.Repeat("s", 120)+".sock"), "--state-dir", c.dir}
		}, "a unix socket path holds at most 107", "invalid argument"},
		{"{} as the state file", func(t *testing.T, c *devCase) (string, []string) {
			must(t, os.Mkdir(c.stateDir, 0o700))
			must(t, os.WriteFile(filepath.Join(c.stateDir, "state.json"), []byte("{}"), 0o600))
			return "", []string{"serve", "--config", c.config}
		}, "holds no Trousseau state (no version field): move it aside", "version 0"},
		{"decrypt-value -o", func(t *testing.T, c *devCase) (string, []string) {
			return "", []string{"decrypt-value", "--config", c.config, "--key", "/registry/secrets/a/b", "-o", "xml"}
		}, `-o "xml": want yaml, json or raw`, ""},
		{"1 MiB to encrypt", func(t *testing.T, c *devCase) (string, []string) {
			return strings.Repeat("x", 1<<20), []string{"encrypt", "--socket", c.socket}
		}, "input is larger than 512 bytes", "513"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDevCase(t)
			stdin, args := tc.setUp(t, c)
			_, stderr, code := runBin(t, stdin, args...)
			if code != 1 {
				t.Errorf("%v: exit %d, want 1", args, code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("%v says:\n%s\nwant %q", args, stderr, tc.want)
			}
			if tc.notWant != "" && strings.Contains(stderr, tc.notWant) {
				t.Errorf("%v says %q:\n%s", args, tc.notWant, stderr)
			}
		})
	}
}

// inittraceEarlyHUP is how GODEBUG=inittrace=1 names the package that
// catches SIGHUP, and heavyInit a package whose init comes long after
// it: the Kubernetes libraries' inits take most of the ~20 ms of
// package initialization, during which a SIGHUP used to end the process.
const (
	inittraceEarlyHUP = "init github.com/trousseau-io/trousseau/cmd/trousseau/internal/earlyhup @"
	heavyInit         = "init k8s.io/"
)

// TestEarlySIGHUP runs the real binary. A SIGHUP sent while the
// packages still initialize (long before main, and before serve reads
// its config) does not end serve: it is a rotation request, done once
// the plugin runs. Every other command still ends on SIGHUP. The moment
// is taken from GODEBUG=inittrace=1, which prints a line as each
// package's init ends: the signal goes out as soon as the first
// Kubernetes package has initialized, not after a guessed delay.
func TestEarlySIGHUP(t *testing.T) {
	t.Run("serve: a rotation request", func(t *testing.T) {
		c := newDevCase(t)
		first := serveBin(t, c)
		before := keyIDOf(t, c.socket)
		first.stop(t)
		p := newBin(t, []string{"GODEBUG=inittrace=1"}, "serve", "--config", c.config)
		heavy := p.out.when(heavyInit)
		p.start(t)
		select {
		case <-heavy:
		case <-p.exited:
			t.Fatalf("serve exited:\n%s", p.out.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("no %q in the init trace:\n%s", heavyInit, p.out.String())
		}
		must(t, p.cmd.Process.Signal(syscall.SIGHUP))
		sentAfter := strings.Count(p.out.String(), "\ninit ")
		waitServing(t, p, c.socket)
		if !p.running() && diedOf(p.cmd.ProcessState, syscall.SIGHUP) {
			t.Fatalf("serve died of the SIGHUP sent during package init:\n%s", p.out.String())
		}
		waitLine(t, p, "SIGHUP: DEK rotation requested")
		waitKeyID(t, p, c.socket, func(k string) bool { return k != before })
		trace := p.out.String()
		early, heavyAt := strings.Index(trace, inittraceEarlyHUP), strings.Index(trace, heavyInit)
		if early < 0 || early > heavyAt {
			t.Errorf("earlyhup's init is not before the Kubernetes packages' (at %d, %d)", early, heavyAt)
		}
		t.Logf("SIGHUP sent after %d of %d package inits", sentAfter, strings.Count(trace, "\ninit "))
		p.stop(t)
	})

	t.Run("other commands end on SIGHUP", func(t *testing.T) {
		for _, during := range []bool{true, false} {
			// decrypt waits on its stdin, which stays open.
			r, w, err := os.Pipe()
			must(t, err)
			t.Cleanup(func() { r.Close(); w.Close() })
			p := newBin(t, []string{"GODEBUG=inittrace=1"}, "decrypt", "--socket", filepath.Join(shortTemp(t), "none.sock"))
			p.cmd.Stdin = r
			heavy := p.out.when(heavyInit)
			p.start(t)
			select {
			case <-heavy:
			case <-p.exited:
				t.Fatalf("decrypt exited before %q:\n%s", heavyInit, p.out.String())
			}
			if !during {
				time.Sleep(300 * time.Millisecond) // in main, reading stdin
			}
			must(t, p.cmd.Process.Signal(syscall.SIGHUP))
			if st := p.wait(t, 10*time.Second); !diedOf(st, syscall.SIGHUP) {
				t.Errorf("decrypt, SIGHUP during init %v: %v, want killed by SIGHUP\n%s", during, st, p.out.String())
			}
		}
	})

	t.Run("one state dir, two plugins", func(t *testing.T) {
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
	})

	t.Run("start-up clean-up of the state dir", func(t *testing.T) {
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
	})
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
