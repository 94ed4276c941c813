package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// Operator reliability, driving the commands as an operator would.

// devSetUp writes the dev mode's three key files and config.yaml into a
// new directory, without serving, and returns the directory.
func devSetUp(t *testing.T) string {
	dir := shortTemp(t)
	if _, err := setUpDev(&bytes.Buffer{}, filepath.Join(dir, "kms.sock"), dir, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return dir
}

func keyPath(dir, backend string) string { return filepath.Join(dir, "keys", backend+".key") }

// statusOf is what `trousseau status` prints.
func statusOf(t *testing.T, socket string) string {
	out, _, err := run(t, "", "status", "--socket", socket)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return out
}

// TestUnusableKeyFileAtStartIsADownBackend: 2 of 3 with state, one
// key file spoiled, restart: the plugin serves on the other two with the
// same key_id, says in its log what is wrong with the file, and
// `config check` shows it too, failing with exit 1: a file the config
// names is unusable, although a quorum answers.
func TestUnusableKeyFileAtStartIsADownBackend(t *testing.T) {
	for _, tc := range testutil.SpoiledKeyFiles {
		t.Run(tc.Name, func(t *testing.T) {
			dir := shortTemp(t)
			socket := filepath.Join(dir, "kms.sock")
			_, stop := serve(t, socket, "--dev", "--socket", socket, "--state-dir", dir, "--health-listen", "127.0.0.1:0")
			before := statusOf(t, socket)
			stop()
			bad := keyPath(dir, "local-c")
			if err := tc.Spoil(bad); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(dir, "config.yaml")
			logs, _ := serve(t, socket, "--config", cfg)
			if after := statusOf(t, socket); after != before {
				t.Errorf("status after the restart:\n%s\nbefore:\n%s", after, before)
			}
			waitFor(t, logs, bad+" "+tc.Want)
			table, _, err := run(t, "", "config", "check", "--config", cfg)
			if err == nil || !strings.Contains(err.Error(), bad) {
				t.Errorf("config check with a spoiled key file: %v, want it named", err)
			}
			for _, want := range []string{"local-c  no", tc.Want, "creating or rotating a DEK needs all 3 backends"} {
				if !strings.Contains(table, want) {
					t.Errorf("config check lacks %q:\n%s", want, table)
				}
			}
		})
	}
}

// waitFor waits until out holds want.
func waitFor(t *testing.T, out *testutil.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConfigCheckRefusesWhatServeCannotUse: each config fails
// `config check` (and `serve`, where serve can tell) with the field at
// fault, instead of passing and leaving serve stuck.
func TestConfigCheckRefusesWhatServeCannotUse(t *testing.T) {
	for _, tc := range []struct {
		name string
		// edit changes the dev config (in dir) and returns it.
		edit func(t *testing.T, dir, cfg string) string
		want string
		// serveToo: serve refuses it at start as well (all but a copied
		// key, which only a probe can see).
		serveToo bool
	}{
		{"symlink to another backend's key file", func(t *testing.T, dir, cfg string) string {
			link := filepath.Join(dir, "link.key")
			must(t, os.Symlink(keyPath(dir, "local-a"), link))
			return strings.Replace(cfg, keyPath(dir, "local-c"), link, 1)
		}, "backends[2].local.keyFile: " + filepath.Join(dir0, "link.key") + " is already the key of backends[0]", true},
		{"dot-dot path to another backend's key file", func(t *testing.T, dir, cfg string) string {
			return strings.Replace(cfg, keyPath(dir, "local-c"), filepath.Join(dir, "keys", "..", "keys", "local-a.key"), 1)
		}, "is already the key of backends[0]", true},
		{"copied key file", func(t *testing.T, dir, cfg string) string {
			raw, err := os.ReadFile(keyPath(dir, "local-a"))
			must(t, err)
			must(t, os.WriteFile(keyPath(dir, "copy"), raw, 0o600))
			return strings.Replace(cfg, keyPath(dir, "local-c"), keyPath(dir, "copy"), 1)
		}, "backends local-a and local-c hold the same key", false},
		{"health listen without a port", func(t *testing.T, dir, cfg string) string {
			return strings.Replace(cfg, "listen: 127.0.0.1:0", "listen: localhost", 1)
		}, "health.listen: want host:port", true},
		{"unknown socket group", func(t *testing.T, dir, cfg string) string {
			return strings.Replace(cfg, "socketPermissions:", "socketPermissions:\n  group: no-such-group-trousseau", 1)
		}, "socketPermissions.group: ", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := devSetUp(t)
			path := filepath.Join(dir, "config.yaml")
			raw, err := os.ReadFile(path)
			must(t, err)
			edited := tc.edit(t, dir, string(raw))
			if edited == string(raw) {
				t.Fatal("test setup: the edit changed nothing")
			}
			must(t, os.WriteFile(path, []byte(edited), 0o600))
			want := strings.ReplaceAll(tc.want, dir0, dir)
			_, _, err = run(t, "", "config", "check", "--config", path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("config check: %v, want %q", err, want)
			}
			if !tc.serveToo {
				return
			}
			_, _, err = run(t, "", "serve", "--config", path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("serve: %v, want %q", err, want)
			}
		})
	}
}

// dir0 stands for the test's directory in a wanted message.
const dir0 = "<dir>"

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMessagesThatMislead: each message says what is wrong, and
// where.
func TestMessagesThatMislead(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setUp edits the dev set-up in dir; it returns stdin and the
		// command's arguments.
		setUp   func(t *testing.T, dir string) (string, []string)
		want    string
		notWant string
	}{
		{"duration as a bare integer", editConfig("probeInterval: 30s", "probeInterval: 30"), `health.probeInterval: want a duration with its unit such as "30s", got the bare number 30`, ""},
		{"17 backends", func(t *testing.T, dir string) (string, []string) {
			var more strings.Builder
			for i := range 14 {
				fmt.Fprintf(&more, "- name: more-%d\n  local: {keyFile: %s}\n", i, keyPath(dir, fmt.Sprint(i)))
			}
			return editConfig("backends:\n", "backends:\n"+more.String())(t, dir)
		}, "backends: at most 16 backends, got 17", "threshold"},
		{"wrong-length key file", spoilKeyFile([]byte("c2hvcnQ=\n")), "holds 9 bytes, the base64 of 5 bytes, want 32 raw bytes or their base64", "permission denied"},
		{"garbage key file", spoilKeyFile([]byte("\x00\x01garbage")), "holds 9 bytes, want 32 raw bytes or their base64", "permission denied"},
		{"directory as key file", func(t *testing.T, dir string) (string, []string) {
			must(t, os.Remove(keyPath(dir, "local-c")))
			must(t, os.Mkdir(keyPath(dir, "local-c"), 0o700))
			return "", []string{"config", "check", "--config", filepath.Join(dir, "config.yaml")}
		}, "is a directory, not a key file", "mode"},
		{"password as a raw key", spoilKeyFile([]byte("correct-horse-battery-staple-123")), "`trousseau keygen FILE`", "permission denied"},
		{"socket path over the unix limit", func(t *testing.T, dir string) (string, []string) {
			long := filepath.Join(dir, strings.Repeat("s", 120)+".sock")
			return "", []string{"serve", "--dev", "--socket", long, "--state-dir", dir}
		}, "a unix socket path holds at most 107", "invalid argument"},
		{"decrypt-value -o", func(t *testing.T, dir string) (string, []string) {
			return "", []string{"decrypt-value", "--config", filepath.Join(dir, "config.yaml"), "--key", "/registry/secrets/a/b", "-o", "xml"}
		}, `-o "xml": want yaml, json or raw`, ""},
		{"1 MiB to encrypt", func(t *testing.T, dir string) (string, []string) {
			return strings.Repeat("x", 1<<20), []string{"encrypt", "--socket", filepath.Join(dir, "kms.sock")}
		}, "input is larger than 512 bytes", "513"},
		{"10 MB of JSON to decrypt", func(t *testing.T, dir string) (string, []string) {
			return `{"keyID":"` + strings.Repeat("x", 10<<20) + `"}`, []string{"decrypt", "--socket", filepath.Join(dir, "kms.sock")}
		}, "input is larger than 1048576 bytes", "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin, args := tc.setUp(t, devSetUp(t))
			out, _, err := run(t, stdin, args...)
			text := out
			if err != nil {
				text += "\n" + err.Error()
			}
			if !strings.Contains(text, tc.want) {
				t.Fatalf("%v: %v\n%s\nwant %q", args, err, out, tc.want)
			}
			if tc.notWant != "" && strings.Contains(text, tc.notWant) {
				t.Errorf("%v says %q:\n%s", args, tc.notWant, text)
			}
		})
	}
}

// editConfig replaces from with to in the dev config, and runs config check.
func editConfig(from, to string) func(t *testing.T, dir string) (string, []string) {
	return func(t *testing.T, dir string) (string, []string) {
		path := filepath.Join(dir, "config.yaml")
		raw, err := os.ReadFile(path)
		must(t, err)
		if !strings.Contains(string(raw), from) {
			t.Fatalf("test setup: %q not in\n%s", from, raw)
		}
		must(t, os.WriteFile(path, []byte(strings.Replace(string(raw), from, to, 1)), 0o600))
		return "", []string{"config", "check", "--config", path}
	}
}

// spoilKeyFile writes content into local-c's key file, and runs config check.
func spoilKeyFile(content []byte) func(t *testing.T, dir string) (string, []string) {
	return func(t *testing.T, dir string) (string, []string) {
		must(t, os.WriteFile(keyPath(dir, "local-c"), content, 0o600))
		return "", []string{"config", "check", "--config", filepath.Join(dir, "config.yaml")}
	}
}

// TestRecoverValidatesBeforeCreatingTheOutputDirectory: a snapshot
// (or config) that cannot be used leaves no output directory behind.
func TestRecoverValidatesBeforeCreatingTheOutputDirectory(t *testing.T) {
	dir := devSetUp(t)
	cfg := filepath.Join(dir, "config.yaml")
	garbage := filepath.Join(dir, "garbage.db")
	junk := make([]byte, 8192)
	rand.Read(junk)
	must(t, os.WriteFile(garbage, junk, 0o600))
	for _, tc := range []struct {
		name, config, snapshot, want string
	}{
		{"corrupt snapshot", cfg, garbage, "corrupt snapshot"},
		{"missing snapshot", cfg, filepath.Join(dir, "missing.db"), "no such file"},
		{"missing config", filepath.Join(dir, "missing.yaml"), garbage, "read config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "restore-"+strings.ReplaceAll(tc.name, " ", "-"))
			_, _, err := run(t, "", "recover", "--config", tc.config, "--etcd-snapshot", tc.snapshot, "--output", out, "-q")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("recover created %s before failing: %v", out, err)
			}
		})
	}
}

// `trousseau status` shows what kube-apiserver
// is not told: the current DEK, how it came, and warnings such as a
// backend down.
func TestStatusShowsTheCurrentDEKAndWarnings(t *testing.T) {
	dir := shortTemp(t)
	socket := filepath.Join(dir, "kms.sock")
	_, stop := serve(t, socket, "--dev", "--socket", socket, "--state-dir", dir, "--health-listen", "127.0.0.1:0")
	stop()
	// The dev config, probing every second so the test need not wait 30 s.
	cfgFile := filepath.Join(dir, "config.yaml")
	raw, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	fast := strings.NewReplacer("probeInterval: 30s", "probeInterval: 1s", "probeTimeout: 5s", "probeTimeout: 1s").Replace(string(raw))
	os.WriteFile(cfgFile, []byte(fast), 0o600)
	out, _ := serve(t, socket, "--config", cfgFile)
	m := regexp.MustCompile(`health=(127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no health address in the log:\n%s", out.String())
	}
	os.Rename(filepath.Join(dir, "keys", "local-c.key"), filepath.Join(dir, "keys", "local-c.key.away"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _, err := run(t, "", "status", "--socket", socket, "--health", m[1])
		if err != nil {
			t.Fatalf("status: %v\n%s", err, st)
		}
		if strings.Contains(st, "current DEK: trousseau-v1-") && strings.Contains(st, "warning: backend local-c down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the DEK and the backend down:\n%s", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
