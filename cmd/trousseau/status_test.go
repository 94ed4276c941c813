package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// statusJSON is `status -o json` as docs/reference/cli.md documents it.
type statusJSON struct {
	Socket  string `json:"socket"`
	Version string `json:"version"`
	Healthz string `json:"healthz"`
	KeyID   string `json:"keyID"`
	Health  *struct {
		Address    string   `json:"address"`
		Ready      bool     `json:"ready"`
		CurrentDEK string   `json:"currentDEK"`
		Warnings   []string `json:"warnings"`
		Error      string   `json:"error"`
	} `json:"health"`
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error"`
}

// TestStatusReadsTheConfig runs the real binaries: with only --config,
// status finds the socket and the health address the config names (not
// the defaults), exits 0 when healthy and 1 when not or when no plugin
// answers, in text and in -o json.
func TestStatusReadsTheConfig(t *testing.T) {
	c := newDevCase(t)
	serveBin(t, c)
	out, stderr, code := runBin(t, "", "status", "--config", c.config)
	if code != 0 || !strings.Contains(out, "healthz: ok") || !strings.Contains(out, "current DEK: trousseau-v1-") {
		t.Fatalf("status --config: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = runBin(t, "", "status", "--config", c.config, "-o", "json")
	var s statusJSON
	decodeStrict(t, out, &s)
	if code != 0 || s.ExitCode != 0 || s.Socket != c.socket || s.Healthz != "ok" || !strings.HasPrefix(s.KeyID, "trousseau-v1-") || s.Version == "" ||
		s.Health == nil || s.Health.Address != c.health || !s.Health.Ready || !strings.HasPrefix(s.Health.CurrentDEK, s.KeyID+", generation 1") || len(s.Health.Warnings) != 0 {
		t.Fatalf("status -o json: exit %d %+v %+v", code, s, s.Health)
	}
	out, _, code = runBin(t, "", "status", "--config", c.config, "--health", "", "-o", "json")
	decodeStrict(t, out, &s)
	if code != 0 || s.Health != nil {
		t.Errorf("--health \"\": exit %d %+v", code, s.Health)
	}

	u := newDevCase(t)
	must(t, os.Remove(keyPath(u.dir, "local-a")))
	must(t, os.Remove(keyPath(u.dir, "local-b")))
	newBin(t, nil, "serve", "--config", u.config).start(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, stderr, code = runBin(t, "", "status", "--config", u.config, "-o", "json")
		decodeStrict(t, out, &s)
		if s.Healthz != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 1 || s.ExitCode != 1 || s.Healthz == "ok" || s.Healthz == "" || !strings.Contains(stderr, "plugin is not healthy") || s.Health == nil || s.Health.Ready {
		t.Errorf("unhealthy plugin: exit %d %+v\n%s", code, s, stderr)
	}

	must(t, os.Remove(u.socket))
	out, stderr, code = runBin(t, "", "status", "--config", u.config, "-o", "json")
	decodeStrict(t, out, &s)
	if code != 1 || s.ExitCode != 1 || s.Error == "" || !strings.Contains(stderr, "status: ") {
		t.Errorf("no plugin: exit %d %+v\n%s", code, s, stderr)
	}
}
