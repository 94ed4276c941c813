package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
