package grpcserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/grpcserver"
)

func TestSocketModeAndDirectory(t *testing.T) {
	h := newHarness(t)
	h.start()
	st, err := os.Stat(h.socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a 0600 socket", st.Mode())
	}
	// Graceful shutdown removes the socket.
	h.stop()
	if _, err := os.Stat(h.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after shutdown: %v", err)
	}
}

func TestSocketGroupAndMode(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "kms.sock")
	l, err := grpcserver.ListenUnix(p, 0o660, "0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o660 {
		t.Fatalf("mode %v, want 0660", st.Mode().Perm())
	}
	if _, err := grpcserver.ListenUnix(filepath.Join(dir, "b.sock"), 0o600, "no-such-group-xyz"); err == nil || !strings.Contains(err.Error(), "no-such-group-xyz") {
		t.Fatalf("unknown group: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "kms.sock")
	// A crashed plugin leaves its socket file behind: nothing listens.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(p); err != nil {
		t.Fatal("test setup: stale socket not left behind")
	}
	l2, err := grpcserver.ListenUnix(p, 0o600, "")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

// TestLiveSocketIsNotStolen: a process that takes no lock (another KMS
// plugin) serves on the path; Trousseau leaves its socket alone.
func TestLiveSocketIsNotStolen(t *testing.T) {
	p := filepath.Join(shortDir(t), "kms.sock")
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := grpcserver.ListenUnix(p, 0o600, ""); err == nil || !strings.Contains(err.Error(), "another process is serving") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	conn, err := net.Dial("unix", p)
	if err != nil {
		t.Fatalf("the other process lost its socket: %v", err)
	}
	conn.Close()
}

// TestSecondInstanceOnOneSocket: two Trousseau instances on one path. The
// lock makes the second give up before it looks at the socket, so it can
// never unlink the first one's between a probe and a remove.
func TestSecondInstanceOnOneSocket(t *testing.T) {
	h := newHarness(t)
	h.start()
	before, err := os.Lstat(h.socket)
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t)
	h2.socket = h.socket
	err = h2.tryStart()
	for _, want := range []string{"another Trousseau instance", h.socket + ".lock", fmt.Sprintf("pid %d", os.Getpid())} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("second instance: %v; want an error that says %q", err, want)
		}
	}
	if after, err := os.Lstat(h.socket); err != nil || !os.SameFile(before, after) {
		t.Fatalf("the first instance's socket was replaced or removed: %v", err)
	}
	c, _ := rawClient(t, h)
	if st := status2(t, c); st.Healthz != "ok" {
		t.Fatal(st.Healthz)
	}
	if st, err := os.Stat(h.socket + ".lock"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v", st.Mode(), err)
	}
	// Once the first stops, its lock is free and the second starts.
	h.stop()
	if err := h2.tryStart(); err != nil {
		t.Fatalf("after the first instance stopped: %v", err)
	}
}

// TestSocketDirectory: a directory in which someone else could replace
// the socket is refused, with what to do; a private one is accepted.
func TestSocketDirectory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  os.FileMode // chmod, after any chown
		owner int         // -1: ours
		group string      // socket group
		want  []string    // in the error; none: accepted
	}{
		{name: "0700", mode: 0o700, owner: -1},
		{name: "0750", mode: 0o750, owner: -1},
		{name: "0750 with a socket group", mode: 0o750, owner: -1, group: "0"},
		{name: "group-writable", mode: 0o770, owner: -1, want: []string{"0770", "writable by group or others", "chmod go-w"}},
		{name: "group-writable with a socket group", mode: 0o770, owner: -1, group: "0", want: []string{"0770", "chmod go-w"}},
		{name: "world-writable", mode: 0o757, owner: -1, want: []string{"0757", "chmod go-w"}},
		{name: "sticky like /tmp", mode: 0o777 | os.ModeSticky, owner: -1, want: []string{"1777", "chmod go-w"}},
		{name: "owned by another user", mode: 0o700, owner: 65534, want: []string{"owned by uid 65534", "chown"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(shortDir(t), "run")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.owner >= 0 {
				if os.Geteuid() != 0 {
					t.Skip("giving a directory to another user needs root")
				}
				if err := os.Chown(dir, tc.owner, -1); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "kms.sock")
			l, err := grpcserver.ListenUnix(p, 0o660, tc.group)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatal("accepted")
			}
			for _, want := range append(tc.want, dir) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left %d files in a refused directory", len(entries))
			}
		})
	}
}

func TestNonSocketInTheWay(t *testing.T) {
	p := filepath.Join(shortDir(t), "kms.sock")
	os.WriteFile(p, []byte("precious"), 0o600)
	if _, err := grpcserver.ListenUnix(p, 0o600, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at the socket path: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "precious" {
		t.Fatal("the file in the way was changed")
	}
}

func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "trs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func get(t *testing.T, url string) (int, string) {
	req, _ := http.NewRequestWithContext(callCtx(t), "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndMetricsEndpoints(t *testing.T) {
	h := newHarness(t)
	h.start()
	base := "http://" + h.plugin.HTTPAddr()
	c, _ := rawClient(t, h)
	r, seed := encrypt(t, c)
	h.plugin.Prober().ProbeOnce(callCtx(t), true) // r's DEK is no longer current...
	h.stop()
	h.start() // ...nor cached: the first Decrypt unwraps, the second hits
	base = "http://" + h.plugin.HTTPAddr()
	c, _ = rawClient(t, h)
	if _, err := decrypt(t, c, r); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(t, c, r); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, base+"/livez"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/livez: %d %q", code, body)
	}
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz healthy: %d", code)
	}
	code, metrics := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`trousseau_grpc_requests_total{code="OK",method="/v2.KeyManagementService/Decrypt"} 2`,
		`trousseau_grpc_request_duration_seconds_bucket{code="OK",method="/v2.KeyManagementService/Decrypt"`,
		`trousseau_backend_up{backend="local-a"} 1`,
		`trousseau_backend_operations_total{backend="local-b",operation="probe",result="ok"}`,
		`trousseau_backend_operation_duration_seconds_bucket{backend="local-a",operation="unwrap"`,
		`trousseau_dek_cache_lookups_total{result="hit"} 1`,
		`trousseau_dek_cache_lookups_total{result="miss"} 1`,
		`trousseau_dek_rotations_total{result="ok"}`,
		`trousseau_threshold 2`,
		`trousseau_backends_reachable 3`,
		`trousseau_healthy 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range []string{string(seed), h.env.KeyID()} {
		if strings.Contains(metrics, secret) {
			t.Error("/metrics holds a seed or a raw key id")
		}
	}
	// Quorum lost: /readyz says why, /livez stays up (a restart would not help).
	h.down(0)
	h.down(1)
	h.probe()
	code, body := get(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "quorum lost") || !strings.Contains(body, "current DEK: "+h.env.KeyID()) {
		t.Fatalf("/readyz with quorum lost: %d %q", code, body)
	}
	if code, _ := get(t, base+"/livez"); code != 200 {
		t.Fatalf("/livez with quorum lost: %d", code)
	}
	_, metrics = get(t, base+"/metrics")
	if !strings.Contains(metrics, `trousseau_backend_up{backend="local-a"} 0`) || !strings.Contains(metrics, "trousseau_healthy 0") {
		t.Error("/metrics does not show the backends down")
	}
	h.up(0)
	h.up(1)
}

func TestShutdownOnContextCancel(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, _ := rawClient(t, h)
	status2(t, c)
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-callCtx(t).Done():
		t.Fatal("Run did not return after cancel")
	}
	h.cancel = nil
	if _, err := c.Status(context.Background(), nil); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

// A check that only a listening socket allows (a custodian that is this
// socket under another path) stops Run before anything is served, and
// leaves no socket behind.
func TestCheckListeningStopsRun(t *testing.T) {
	h := newHarness(t)
	var checked string
	h.checkListening = func(socket string) error {
		if _, err := os.Stat(socket); err != nil {
			t.Errorf("checked before the socket listens: %v", err)
		}
		checked = socket
		return errors.New("kmsplugin self: kmsplugin.endpoint: is this plugin's own socket")
	}
	err := h.tryStart()
	if err == nil || !strings.Contains(err.Error(), "own socket") || checked != h.socket {
		t.Fatalf("Run: %v (checked %q)", err, checked)
	}
	if _, err := os.Stat(h.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}
