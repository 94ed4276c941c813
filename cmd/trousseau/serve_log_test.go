package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jsonLines parses every line of out as a JSON log record.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("not a JSON log line (%v): %q\n%s", err, l, out)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestServeLogFlags runs the real binary on a config that logs text at
// info: --log-format json --log-level debug override it (and debug
// durations are Go duration strings); $TROUSSEAU_LOG_LEVEL sets the
// level, and --log-level overrides that.
func TestServeLogFlags(t *testing.T) {
	c := newDevCase(t)
	serveBin(t, c).stop(t) // a state to unlock: the shares are unwrapped at start
	p := newBin(t, nil, "serve", "--config", c.config, "--log-format", "json", "--log-level", "debug").start(t)
	waitServing(t, p, c.socket)
	waitLine(t, p, `"msg":"share unwrapped"`)
	p.stop(t)
	found := false
	for _, r := range jsonLines(t, p.out.String()) {
		if r["msg"] != "share unwrapped" {
			continue
		}
		took, ok := r["took"].(string)
		if _, err := time.ParseDuration(took); !ok || err != nil {
			t.Errorf("took is %#v, want a Go duration string", r["took"])
		}
		found = true
	}
	if !found {
		t.Errorf("no debug line:\n%s", p.out.String())
	}

	p = newBin(t, []string{"TROUSSEAU_LOG_LEVEL=debug"}, "serve", "--config", c.config).start(t)
	waitServing(t, p, c.socket)
	waitLine(t, p, "level=DEBUG")
	p.stop(t)
	p = newBin(t, []string{"TROUSSEAU_LOG_LEVEL=debug"}, "serve", "--config", c.config, "--log-level", "warn").start(t)
	waitServing(t, p, c.socket)
	p.stop(t)
	if strings.Contains(p.out.String(), "level=DEBUG") || strings.Contains(p.out.String(), "level=INFO") {
		t.Errorf("--log-level warn over $TROUSSEAU_LOG_LEVEL=debug:\n%s", p.out.String())
	}
}

// TestServeFatalErrorsGoThroughTheLogger runs the real binary: an error
// that stops serve once its logger is up is one log line in the format
// asked for (a JSON pipeline sees why the pod crash-loops), and is not
// printed again; before the config gives a logger, --log-format makes
// one, and without it the error is printed once, plainly.
func TestServeFatalErrorsGoThroughTheLogger(t *testing.T) {
	c := newDevCase(t)
	must(t, os.WriteFile(c.stateDir, nil, 0o600)) // a file where the state dir should be
	for _, tc := range []struct {
		name   string
		args   []string
		want   string // in the error
		asJSON bool
	}{
		{"after the config loads, as json", []string{"--config", c.config, "--log-format", "json"}, "not a directory", true},
		{"before the config loads, as json", []string{"--config", filepath.Join(c.dir, "missing.yaml"), "--log-format", "json"}, "read config", true},
		{"before the config loads, no logger", []string{"--config", filepath.Join(c.dir, "missing.yaml")}, "read config", false},
		{"a log level that is none", []string{"--config", c.config, "--log-level", "loud"}, `log level "loud" (--log-level or $TROUSSEAU_LOG_LEVEL): want debug, info, warn or error`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := runBin(t, "", append([]string{"serve"}, tc.args...)...)
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q", code, out)
			}
			if !tc.asJSON {
				if strings.Count(stderr, tc.want) != 1 || !strings.HasPrefix(stderr, "trousseau: ") {
					t.Errorf("stderr:\n%s\nwant %q once", stderr, tc.want)
				}
				return
			}
			recs := jsonLines(t, stderr)
			last := recs[len(recs)-1]
			if last["level"] != "ERROR" || last["msg"] != "trousseau serve stopped" || !strings.Contains(last["error"].(string), tc.want) {
				t.Errorf("last line %v", last)
			}
		})
	}
}
