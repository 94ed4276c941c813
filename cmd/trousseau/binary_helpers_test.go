package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// Helpers for the tests that drive the real binary (*_binary_test.go),
// for what only the process shows: that it starts or refuses to, its exit
// code, its log lines, what `status` and /metrics say, signals. The
// in-process tests (operator_test.go) cover the messages in more variants.
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
	return runBinWith(t, "", stdin, args...)
}

// runBinIn is [runBin] in the working directory dir, with no stdin.
func runBinIn(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runBinWith(t, dir, "", args...)
}

func runBinWith(t *testing.T, dir, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	path := buildBinary(t) // before the minute starts: the first call builds it
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
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
