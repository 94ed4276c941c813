package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// rotateJSON is `rotate -o json` as docs/reference/cli.md documents it.
type rotateJSON struct {
	Result             string `json:"result"`
	KeyID              string `json:"keyID"`
	Generation         uint32 `json:"generation"`
	PreviousKeyID      string `json:"previousKeyID"`
	PreviousGeneration uint32 `json:"previousGeneration"`
	Reason             string `json:"reason"`
	ExitCode           int    `json:"exitCode"`
}

// TestRotate runs the real binaries: `rotate` reaches the plugin of a
// config or state dir over its admin socket, with no signal, and exits
// 0 once the new DEK is current (the one Status reports), or 1 when the
// rotation is postponed (saying why) or no plugin answers.
func TestRotate(t *testing.T) {
	c := newDevCase(t)
	p := serveBin(t, c)
	before := keyIDOf(t, c.socket)
	out, stderr, code := runBin(t, "", "rotate", "--config", c.config, "-o", "json")
	var r rotateJSON
	decodeStrict(t, out, &r)
	if code != 0 || r.Result != "rotated" || r.ExitCode != 0 || r.PreviousKeyID != before || r.PreviousGeneration != 1 || r.Generation != 2 || r.KeyID != keyIDOf(t, c.socket) {
		t.Fatalf("rotate: exit %d %+v\n%s", code, r, stderr)
	}
	out, _, code = runBin(t, "", "rotate", "--state-dir", c.stateDir)
	if code != 0 || !strings.Contains(out, "rotated: key_id "+keyIDOf(t, c.socket)+", generation 3 (was "+r.KeyID+", generation 2)") {
		t.Fatalf("rotate --state-dir: exit %d %s", code, out)
	}
	waitLine(t, p, "DEK rotation requested (trousseau rotate)")

	key := keyPath(c.dir, "local-c")
	must(t, os.Rename(key, key+".away"))
	out, stderr, code = runBin(t, "", "rotate", "--config", c.config, "-o", "json")
	decodeStrict(t, out, &r)
	if code != 1 || r.Result != "postponed" || r.ExitCode != 1 || r.Generation != 3 || !strings.Contains(r.Reason, "postponed: 2 of 3 backends reachable, a new DEK needs all") || !strings.Contains(stderr, "rotation postponed") {
		t.Fatalf("rotate with local-c away: exit %d %+v\n%s", code, r, stderr)
	}
	must(t, os.Rename(key+".away", key))
	p.stop(t)
	if _, err := os.Lstat(adminSocket(c.stateDir)); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind: %v", err)
	}
	_, stderr, code = runBin(t, "", "rotate", "--state-dir", c.stateDir)
	if code != 1 || !strings.Contains(stderr, "no plugin answers on "+adminSocket(c.stateDir)) {
		t.Errorf("rotate with no plugin: exit %d %s", code, stderr)
	}
}

// TestRotateOnlyForThePluginsUser: with the state dir and the admin
// socket opened to everyone, another user still cannot make the plugin
// rotate: the socket answers its own uid and root only.
func TestRotateOnlyForThePluginsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the command as another user")
	}
	c := newDevCase(t)
	serveBin(t, c)
	before := keyIDOf(t, c.socket)
	must(t, os.Chmod(c.dir, 0o711))
	must(t, os.Chmod(c.stateDir, 0o711))
	must(t, os.Chmod(adminSocket(c.stateDir), 0o666))
	bin := filepath.Join(shortTemp(t), "trousseau")
	must(t, os.Chmod(filepath.Dir(bin), 0o755))
	raw, err := os.ReadFile(buildBinary(t))
	must(t, err)
	must(t, os.WriteFile(bin, raw, 0o755))
	cmd := exec.Command(bin, "rotate", "--state-dir", c.stateDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "only its own user and root may ask it to rotate") {
		t.Fatalf("rotate as nobody: %v\n%s", err, out)
	}
	if after := keyIDOf(t, c.socket); after != before {
		t.Fatalf("rotated for another user: %s -> %s", before, after)
	}
}

// A close by the plugin reads as a refusal whatever words the HTTP client
// chose for it; a timeout or a missing socket does not.
func TestAdminDialErrorNamesTheRefusal(t *testing.T) {
	refusal := "only its own user and root may ask it to rotate"
	closedIdle := errors.New("http: server closed idle connection")
	if got := adminDialError("a.sock", closedIdle, true).Error(); !strings.Contains(got, refusal) {
		t.Errorf("accepted then closed: %s", got)
	}
	if got := adminDialError("a.sock", context.DeadlineExceeded, true).Error(); strings.Contains(got, refusal) {
		t.Errorf("timeout read as a refusal: %s", got)
	}
	if got := adminDialError("a.sock", syscall.ECONNREFUSED, false).Error(); !strings.Contains(got, "no plugin answers") {
		t.Errorf("refused dial: %s", got)
	}
}
