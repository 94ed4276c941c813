package main

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

func TestDrillCommand(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	snap := f.Snapshot(t, t.TempDir())
	all := f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c")
	drill := func(cfg string, args ...string) (string, int) {
		t.Helper()
		out, errOut, err := run(t, "", append([]string{"drill", "--config", cfg, "--etcd-snapshot", snap, "-q"}, args...)...)
		var ee *exitError
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &ee):
			return out, ee.code
		}
		t.Fatalf("drill: %v\n%s\n%s", err, out, errOut)
		return "", -1
	}

	out, code := drill(all)
	if code != 0 || strings.Count(out, "local-a=ok local-b=ok local-c=ok") != 2 || !strings.Contains(out, "secrets") {
		t.Fatalf("all backends: exit %d\n%s", code, out)
	}

	os.Remove(f.Plugin.KeyFiles["local-c"])
	out, code = drill(all)
	if code != 1 || !strings.Contains(out, "local-c=unavailable") || !strings.Contains(out, "0 (below 1)") {
		t.Fatalf("local-c lost: exit %d\n%s", code, out)
	}
	jsonOut, code := drill(all, "-o", "json", "--min-margin", "0")
	var report drillJSON
	if err := json.Unmarshal([]byte(jsonOut), &report); err != nil || code != 0 || len(report.DEKs) != 2 ||
		report.DEKs[0].Backends["local-c"] != "unavailable" || report.DEKs[0].Margin != 0 {
		t.Fatalf("json with --min-margin 0: exit %d, %v\n%s", code, err, jsonOut)
	}

	os.Remove(f.Plugin.KeyFiles["local-b"])
	if out, code = drill(all); code != 2 || !strings.Contains(out, "UNRECOVERABLE") || !strings.Contains(out, "local-a=unverified") {
		t.Fatalf("two of three lost: exit %d\n%s", code, out)
	}
}

// With etcd, the drill also checks the DEKs of the state dir (the current
// one may seal nothing yet), and says so when there is none here.
func TestDrillOfASnapshotAndTheStateDir(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	snap := f.Snapshot(t, t.TempDir())
	cfg := f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c")
	out, errOut, err := run(t, "", "drill", "--config", cfg, "--etcd-snapshot", snap)
	if err != nil || strings.Contains(out, "state: ") || !strings.Contains(errOut, "not checked") || !strings.Contains(errOut, "drill: read ") {
		t.Fatalf("no state dir here: %v\n%s\n%s", err, out, errOut)
	}
	out, errOut, err = run(t, "", "drill", "--config", cfg, "--etcd-snapshot", snap, "--state-dir", f.Plugin.StateDir, "-q")
	if err != nil || !strings.Contains(out, "state: ") || strings.Contains(errOut, "drill: ") {
		t.Fatalf("with --state-dir: %v\n%s\n%s", err, out, errOut)
	}
}

func TestDrillOfTheStateDir(t *testing.T) {
	dir := shortTemp(t)
	serveDev(t, dir)
	out, errOut, err := run(t, "", "drill", "--config", dir+"/config.yaml", "-q")
	if err != nil || !strings.Contains(out, "state: ") || strings.Count(out, "=ok") != 3 {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
}
