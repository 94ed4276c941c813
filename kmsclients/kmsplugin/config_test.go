package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients"
)

func TestValidate(t *testing.T) {
	long := "unix:///" + strings.Repeat("p", maxSocketPath)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"minimal", Config{Endpoint: "unix:///var/run/kmsplugin/aws.sock"}, ""},
		{"v1", Config{Endpoint: "unix:///var/run/kmsplugin/hsm.sock", APIVersion: "v1"}, ""},
		{"v2 and timeout", Config{Endpoint: "unix:///run/k.sock", APIVersion: "v2", Timeout: Duration{Duration: 3 * time.Second}}, ""},
		{"unclean path", Config{Endpoint: "unix:///run//kms/../k.sock"}, ""},
		{"missing", Config{}, "kmsplugin.endpoint: required"},
		{"tcp", Config{Endpoint: "tcp://127.0.0.1:8080"}, "kmsplugin.endpoint: "},
		{"bare path", Config{Endpoint: "/var/run/k.sock"}, "kmsplugin.endpoint: "},
		{"two slashes", Config{Endpoint: "unix://var/run/k.sock"}, "kmsplugin.endpoint: \"unix://var/run/k.sock\": want unix:///absolute/path"},
		{"abstract", Config{Endpoint: "unix:///@kms"}, "kmsplugin.endpoint: \"unix:///@kms\" is an abstract socket"},
		{"query", Config{Endpoint: "unix:///run/k.sock?x=1"}, "kmsplugin.endpoint: "},
		{"colon", Config{Endpoint: "unix:///run/a:b.sock"}, "kmsplugin.endpoint: \"unix:///run/a:b.sock\": the socket path must not contain ':'"},
		{"space", Config{Endpoint: "unix:///run/a%20b.sock"}, "kmsplugin.endpoint: "},
		{"too long", Config{Endpoint: long}, "a unix socket path holds at most 107"},
		{"api", Config{Endpoint: "unix:///run/k.sock", APIVersion: "v1beta1"}, "kmsplugin.apiVersion: want v2 or v1, got \"v1beta1\""},
		{"negative timeout", Config{Endpoint: "unix:///run/k.sock", Timeout: Duration{Duration: -time.Second}}, "kmsplugin.timeout: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
			_, nerr := New(context.Background(), "a", tc.cfg)
			if (nerr == nil) != (err == nil) {
				t.Fatalf("New and Validate disagree: %v, %v", nerr, err)
			}
		})
	}
	if _, err := New(context.Background(), "Bad_Name", Config{Endpoint: "unix:///run/k.sock"}); err == nil {
		t.Fatal("New accepted an invalid backend name")
	}
}

// TestConfigYAML: the block reads as the config layer will read it
// (sigs.k8s.io/yaml, strict), durations with their unit.
func TestConfigYAML(t *testing.T) {
	var c Config
	if err := yaml.UnmarshalStrict([]byte("endpoint: unix:///var/run/kmsplugin/gcp.sock\napiVersion: v2\ntimeout: 2500ms\npublicKey: true\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "unix:///var/run/kmsplugin/gcp.sock" || c.APIVersion != "v2" || c.Timeout.Duration != 2500*time.Millisecond || !c.PublicKey {
		t.Fatalf("decoded %+v", c)
	}
	out, err := yaml.Marshal(Config{Endpoint: "unix:///a.sock"})
	if err != nil || strings.Contains(string(out), "timeout") || strings.Contains(string(out), "apiVersion") {
		t.Fatalf("an unset timeout and apiVersion are written: %s %v", out, err)
	}
	out, _ = yaml.Marshal(Config{Endpoint: "unix:///a.sock", Timeout: Duration{Duration: 3 * time.Second}})
	if !strings.Contains(string(out), "timeout: 3s") {
		t.Fatalf("timeout written as %s", out)
	}
	for _, bad := range []string{"timeout: 3", "timeout: soon", "endpoint: unix:///a.sock\nendpiont: x"} {
		if err := yaml.UnmarshalStrict([]byte(bad), &c); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCheckEndpoints(t *testing.T) {
	dir := shortTemp(t)
	own := filepath.Join(dir, "trousseau.sock")
	link := func(name, target string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ownLink := link("own-link.sock", own)         // dangling until own exists
	dirLink := link("d", dir)                     // a symlinked directory
	relLink := link("rel.sock", "trousseau.sock") // relative target
	aws := filepath.Join(dir, "aws.sock")
	awsLink := link("aws-link.sock", aws)
	u := func(p string) string { return "unix://" + p }

	check := func(t *testing.T, own string, endpoints []string, want ...string) {
		t.Helper()
		err := CheckEndpoints(own, endpoints)
		var errs []*EndpointError
		if err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ee *EndpointError
				if !errors.As(e, &ee) {
					t.Fatalf("not an *EndpointError: %v", e)
				}
				errs = append(errs, ee)
			}
		}
		if len(errs) != len(want) {
			t.Fatalf("CheckEndpoints(%s, %v) = %v, want %d errors %v", own, endpoints, err, len(want), want)
		}
		for i, w := range want {
			if !strings.Contains(errs[i].Error(), w) || !strings.HasPrefix(errs[i].Error(), "kmsplugin.endpoint: ") {
				t.Errorf("error %d: %q, want %q", i, errs[i], w)
			}
		}
	}

	for i, when := range []string{"before the sockets exist", "with the sockets listening"} {
		t.Run(when, func(t *testing.T) {
			check(t, own, []string{u(aws), u(filepath.Join(dir, "gcp.sock"))})
			check(t, own, []string{u(own)}, "Trousseau's own socket")
			check(t, "unix://"+own, []string{u(aws), u(ownLink)}, "Trousseau's own socket")
			check(t, own, []string{u(filepath.Join(dirLink, "trousseau.sock"))}, "Trousseau's own socket")
			check(t, own, []string{u(relLink)}, "Trousseau's own socket")
			check(t, own, []string{u(dir + "//x/../trousseau.sock")}, "Trousseau's own socket")
			check(t, ownLink, []string{u(own)}, "Trousseau's own socket")
			check(t, own, []string{u(aws), u(awsLink), u(aws)}, "another kmsplugin backend too (unix://"+aws+")", "another kmsplugin backend too (unix://"+aws+")")
			check(t, "", []string{u(own), u(aws)})
			check(t, own, []string{"tcp://bad", u(aws)})
			if err := CheckEndpoints(own, []string{u(aws), u(aws)}); err == nil {
				t.Fatal("no error")
			} else if ee := err.(interface{ Unwrap() []error }).Unwrap()[0].(*EndpointError); ee.Index != 1 || ee.Other != 0 {
				t.Fatalf("indexes %+v", ee)
			}
			if err := CheckEndpoints(own, []string{u(aws), u(own)}); err == nil {
				t.Fatal("no error")
			} else if ee := err.(interface{ Unwrap() []error }).Unwrap()[0].(*EndpointError); ee.Index != 1 || ee.Other != -1 {
				t.Fatalf("indexes %+v", ee)
			}
		})
		for _, p := range []string{own, aws} {
			if i > 0 {
				break
			}
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}
	}

	t.Run("hard link", func(t *testing.T) {
		hard := filepath.Join(dir, "hard.sock")
		if err := os.Link(own, hard); err != nil {
			t.Fatal(err)
		}
		check(t, own, []string{u(hard)}, "Trousseau's own socket")
	})
}

// notPlugin is a backend of another kind: CheckNotSelf skips it.
type notPlugin struct{ kmsclients.Backend }

// TestCheckNotSelf: once Trousseau listens on its socket, an endpoint
// that reaches that very socket by another path (a symlinked directory, a
// hard link) is refused, naming the backend; other custodians, endpoints
// with nothing there and other kinds of backend are not.
func TestCheckNotSelf(t *testing.T) {
	dir := shortTemp(t)
	own := filepath.Join(dir, "trousseau.sock")
	if err := CheckNotSelf(nil, own); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("before Trousseau listens: %v", err)
	}
	l, err := net.Listen("unix", own)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	dirLink := filepath.Join(shortTemp(t), "d")
	if err := os.Symlink(dir, dirLink); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(shortTemp(t), "hard.sock")
	if err := os.Link(own, hard); err != nil {
		t.Fatal(err)
	}
	custodian := startFake(t)
	backends := []kmsclients.Backend{
		newTestBackend(t, "custodian", custodian.endpoint()),
		notPlugin{},
		newTestBackend(t, "via-dir-link", "unix://"+filepath.Join(dirLink, "trousseau.sock")),
		newTestBackend(t, "via-hard-link", "unix://"+hard),
		newTestBackend(t, "nothing-there", "unix://"+filepath.Join(dir, "none.sock")),
		newTestBackend(t, "direct", "unix://"+own),
	}
	for _, ownSocket := range []string{own, "unix://" + own, filepath.Join(dirLink, "trousseau.sock")} {
		err := CheckNotSelf(backends, ownSocket)
		var refused []string
		if err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ee *EndpointError
				if !errors.As(e, &ee) || ee.Other != -1 || backends[ee.Index].Name() != ee.Name {
					t.Fatalf("%v: %+v", e, ee)
				}
				if !strings.HasPrefix(e.Error(), "kmsplugin "+ee.Name+": kmsplugin.endpoint: ") || !strings.Contains(e.Error(), "is Trousseau's own socket ("+ownSocket+")") {
					t.Errorf("error %q", e)
				}
				refused = append(refused, ee.Name)
			}
		}
		if strings.Join(refused, " ") != "via-dir-link via-hard-link direct" {
			t.Fatalf("own socket %s: refused %v (%v), want the backends reaching it by a symlinked directory, a hard link, and directly", ownSocket, refused, err)
		}
	}
	if err := CheckNotSelf(backends[:2], own); err != nil {
		t.Fatalf("no backend reaches the socket: %v", err)
	}
}

// TestCheckNotSelfBindMount: an endpoint reaching Trousseau's socket
// through a bind mount escapes CheckEndpoints but not CheckNotSelf. It
// needs the privilege to make a mount namespace.
func TestCheckNotSelfBindMount(t *testing.T) {
	dir := shortTemp(t)
	own := filepath.Join(dir, "trousseau.sock")
	mnt := shortTemp(t)
	b := newTestBackend(t, "via-bind-mount", "unix://"+filepath.Join(mnt, "trousseau.sock"))
	type result struct {
		skip, before, after error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, and its mount namespace, end with
		// the goroutine.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
			done <- result{skip: fmt.Errorf("unshare: %w", err)}
			return
		}
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			done <- result{skip: fmt.Errorf("make mounts private: %w", err)}
			return
		}
		if err := syscall.Mount(dir, mnt, "", syscall.MS_BIND, ""); err != nil {
			done <- result{skip: fmt.Errorf("bind mount: %w", err)}
			return
		}
		var r result
		r.before = CheckEndpoints(own, []string{b.endpoint})
		l, err := net.Listen("unix", own)
		if err != nil {
			r.after = err
			done <- r
			return
		}
		defer l.Close()
		r.after = CheckNotSelf([]kmsclients.Backend{b}, own)
		done <- r
	}()
	r := <-done
	if r.skip != nil {
		t.Skipf("no mount namespace of our own: %v", r.skip)
	}
	if r.before != nil {
		t.Fatalf("CheckEndpoints saw through the bind mount before the socket existed (the test no longer shows the gap): %v", r.before)
	}
	var ee *EndpointError
	if !errors.As(r.after, &ee) || ee.Name != "via-bind-mount" || ee.Other != -1 {
		t.Fatalf("CheckNotSelf through a bind mount: %v", r.after)
	}
}
