package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// checkJSON is the schema of `config check -o json`, as
// docs/reference/cli.md documents it; unknown fields fail the decode.
type checkJSON struct {
	Config    string `json:"config"`
	Offline   bool   `json:"offline"`
	ExitCode  int    `json:"exitCode"`
	Result    string `json:"result"`
	Threshold int    `json:"threshold"`
	Reachable int    `json:"reachable"`
	Backends  []struct {
		Name           string  `json:"name"`
		Kind           string  `json:"kind"`
		Probed         bool    `json:"probed"`
		Reachable      bool    `json:"reachable"`
		KeyIdentity    string  `json:"keyIdentity"`
		LatencySeconds float64 `json:"latencySeconds"`
		ErrorKind      string  `json:"errorKind"`
		Error          string  `json:"error"`
	} `json:"backends"`
	CurrentDEK *struct {
		KeyID      string   `json:"keyID"`
		Generation uint32   `json:"generation"`
		Threshold  int      `json:"threshold"`
		Backends   []string `json:"backends"`
		Created    string   `json:"created"`
	} `json:"currentDEK"`
	Invalid  []string `json:"invalid"`
	Unready  []string `json:"unready"`
	Warnings []string `json:"warnings"`
	Notes    []string `json:"notes"`
}

// decodeStrict parses out into v, refusing fields v does not have.
func decodeStrict(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("not the documented JSON (%v):\n%s", err, out)
	}
}

// downPluginConfig writes a config of three backends, threshold k: the
// first localBackends are key files, the others kmsplugin backends on a
// socket nobody serves.
func downPluginConfig(t *testing.T, k, localBackends int) string {
	t.Helper()
	dir := shortTemp(t)
	y := "socket: " + filepath.Join(dir, "kms.sock") + "\nstateDir: " + filepath.Join(dir, "state") +
		"\nthreshold: " + string(rune('0'+k)) + "\nhealth: {listen: 127.0.0.1:0}\nbackends:\n"
	for i := range localBackends {
		key := filepath.Join(dir, string(rune('a'+i))+".key")
		must(t, local.GenerateKeyFile(key))
		y += "  - name: key-" + string(rune('a'+i)) + "\n    local: {keyFile: " + key + "}\n"
	}
	for i := localBackends; i < 3; i++ {
		y += "  - name: plugin-" + string(rune('a'+i)) + "\n    kmsplugin: {endpoint: unix://" + filepath.Join(dir, "nobody-"+string(rune('a'+i))+".sock") + ", timeout: 1s}\n"
	}
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte(y), 0o600))
	return path
}

// TestConfigCheckExitCodes runs the real binary: 0 when serve would start
// ready, 1 for an invalid config or an unusable file it names, 2 for a
// valid config that would start unready; --offline gives 0 or 1 only.
// Each case is checked in text (stderr says why) and in -o json.
func TestConfigCheckExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setUp  func(t *testing.T) string // returns the config file
		args   []string
		code   int
		result string
		why    string // in stderr, and in invalid or unready
	}{
		{"a fresh dev config", func(t *testing.T) string { return filepath.Join(devSetUp(t), "config.yaml") }, nil, 0, "ok", ""},
		{"a key file missing", func(t *testing.T) string {
			dir := devSetUp(t)
			must(t, os.Remove(keyPath(dir, "local-b")))
			return filepath.Join(dir, "config.yaml")
		}, nil, 1, "invalid", "local-b.key: no such file or directory"},
		{"a key file open to others", func(t *testing.T) string {
			dir := devSetUp(t)
			must(t, os.Chmod(keyPath(dir, "local-c"), 0o644))
			return filepath.Join(dir, "config.yaml")
		}, nil, 1, "invalid", "has mode 0644"},
		{"a key file that holds no key", func(t *testing.T) string {
			dir := devSetUp(t)
			must(t, os.WriteFile(keyPath(dir, "local-a"), []byte("hunter2\n"), 0o600))
			return filepath.Join(dir, "config.yaml")
		}, nil, 1, "invalid", "want 32 raw bytes or their base64"},
		{"a key file open to others, offline", func(t *testing.T) string {
			dir := devSetUp(t)
			must(t, os.Chmod(keyPath(dir, "local-c"), 0o644))
			return filepath.Join(dir, "config.yaml")
		}, []string{"--offline"}, 1, "invalid", "has mode 0644"},
		{"a field of the wrong type", func(t *testing.T) string {
			dir := devSetUp(t)
			p := filepath.Join(dir, "config.yaml")
			raw, _ := os.ReadFile(p)
			must(t, os.WriteFile(p, []byte(strings.Replace(string(raw), "threshold: 2", "threshold: two", 1)), 0o600))
			return p
		}, nil, 1, "invalid", `threshold: want a whole number, got "two"`},
		{"no DEK yet and a backend down", func(t *testing.T) string { return downPluginConfig(t, 2, 2) }, nil, 2, "unready", "no DEK yet, and the first one needs all 3 backends: plugin-c did not answer"},
		{"fewer than k answer", func(t *testing.T) string { return downPluginConfig(t, 2, 1) }, nil, 2, "unready", "quorum not reachable: 1 of 3 backends answered, 2 needed"},
		{"fewer than k answer, offline", func(t *testing.T) string { return downPluginConfig(t, 2, 1) }, []string{"--offline"}, 0, "ok", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.setUp(t)
			args := append([]string{"config", "check", "--config", cfg}, tc.args...)
			_, stderr, code := runBin(t, "", args...)
			if code != tc.code || !strings.Contains(stderr, tc.why) {
				t.Errorf("text: exit %d, want %d; stderr:\n%s\nwant %q", code, tc.code, stderr, tc.why)
			}
			out, _, code := runBin(t, "", append(args, "-o", "json")...)
			var r checkJSON
			decodeStrict(t, out, &r)
			if code != tc.code || r.ExitCode != tc.code || r.Result != tc.result || r.Config != cfg {
				t.Errorf("json: exit %d, exitCode %d, result %q, config %q; want %d %q\n%s", code, r.ExitCode, r.Result, r.Config, tc.code, tc.result, out)
			}
			why := append(append([]string{}, r.Invalid...), r.Unready...)
			if tc.why != "" && !strings.Contains(strings.Join(why, "\n"), tc.why) {
				t.Errorf("json: invalid %q, unready %q; want %q", r.Invalid, r.Unready, tc.why)
			}
			if tc.result == "ok" && (len(why) > 0 || r.Invalid == nil || r.Unready == nil) {
				t.Errorf("json: invalid %#v, unready %#v; want two empty lists", r.Invalid, r.Unready)
			}
		})
	}
}

// TestConfigCheckJSONDescribesBackendsAndTheDEK: -o json of a config
// whose plugin has made its DEK lists each backend (offline: remote ones
// not probed) and the current DEK.
func TestConfigCheckJSONDescribesBackendsAndTheDEK(t *testing.T) {
	c := newDevCase(t)
	serveBin(t, c).stop(t)
	out, stderr, code := runBin(t, "", "config", "check", "--config", c.config, "-o", "json")
	var r checkJSON
	decodeStrict(t, out, &r)
	if code != 0 || r.Threshold != 2 || r.Reachable != 3 || len(r.Backends) != 3 {
		t.Fatalf("exit %d: %+v\n%s", code, r, stderr)
	}
	for _, b := range r.Backends {
		if b.Kind != "local" || !b.Probed || !b.Reachable || !strings.HasPrefix(b.KeyIdentity, "local:") || b.LatencySeconds <= 0 || b.LatencySeconds > 60 {
			t.Errorf("backend %+v", b)
		}
	}
	if r.CurrentDEK == nil || r.CurrentDEK.Generation != 1 || r.CurrentDEK.Threshold != 2 || !strings.HasPrefix(r.CurrentDEK.KeyID, "trousseau-") ||
		strings.Join(r.CurrentDEK.Backends, ",") != "local-a,local-b,local-c" {
		t.Errorf("currentDEK %+v", r.CurrentDEK)
	}

	// A DEK made for other backends is not used for writes: serve needs
	// every backend to make a new one, and one that does not answer makes
	// it start unready, although a quorum answers.
	c.edit(t, "backends:\n", "backends:\n- name: plugin-d\n  kmsplugin: {endpoint: unix://"+filepath.Join(c.dir, "nobody.sock")+", timeout: 1s}\n")
	out, stderr, code = runBin(t, "", "config", "check", "--config", c.config, "-o", "json")
	decodeStrict(t, out, &r)
	if code != 2 || !strings.Contains(strings.Join(r.Unready, ";"), "is 2 of local-a,local-b,local-c, the config says 2 of plugin-d,local-a,local-b,local-c: serve seals no write under it and makes a new DEK first, which needs all 4 backends: plugin-d did not answer") {
		t.Errorf("a backend added: exit %d %+v\n%s", code, r, stderr)
	}

	out, _, code = runBin(t, "", "config", "check", "--config", downPluginConfig(t, 2, 1), "--offline", "-o", "json")
	decodeStrict(t, out, &r)
	if code != 0 || !r.Offline || r.Backends[0].Probed != true || r.Backends[1].Probed || r.Backends[1].Kind != "kmsplugin" {
		t.Errorf("offline: exit %d %+v", code, r)
	}
}

// decodeLoose parses out into v, a schema that is not ours (a Kubernetes
// object), so other fields are allowed.
func decodeLoose(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("not JSON (%v):\n%s", err, out)
	}
}
