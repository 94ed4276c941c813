package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// inittraceEarlyHUP is how GODEBUG=inittrace=1 names the package that
// catches SIGHUP, and heavyInit a package whose init comes long after
// it: the Kubernetes libraries' inits take most of the ~20 ms of
// package initialization, during which a SIGHUP used to end the process.
const (
	inittraceEarlyHUP = "init github.com/trousseau-io/trousseau/cmd/trousseau/internal/earlyhup @"
	heavyInit         = "init k8s.io/"
)

// TestEarlySIGHUP runs the real binary. A SIGHUP sent while the
// packages still initialize (long before main, and before serve reads
// its config) does not end serve: it is a rotation request, done once
// the plugin runs. Every other command still ends on SIGHUP. The moment
// is taken from GODEBUG=inittrace=1, which prints a line as each
// package's init ends: the signal goes out as soon as the first
// Kubernetes package has initialized, not after a guessed delay.
func TestEarlySIGHUP(t *testing.T) {
	t.Run("serve: a rotation request", func(t *testing.T) {
		c := newDevCase(t)
		first := serveBin(t, c)
		before := keyIDOf(t, c.socket)
		first.stop(t)
		p := newBin(t, []string{"GODEBUG=inittrace=1"}, "serve", "--config", c.config)
		heavy := p.out.when(heavyInit)
		p.start(t)
		select {
		case <-heavy:
		case <-p.exited:
			t.Fatalf("serve exited:\n%s", p.out.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("no %q in the init trace:\n%s", heavyInit, p.out.String())
		}
		must(t, p.cmd.Process.Signal(syscall.SIGHUP))
		sentAfter := strings.Count(p.out.String(), "\ninit ")
		waitServing(t, p, c.socket)
		if !p.running() && diedOf(p.cmd.ProcessState, syscall.SIGHUP) {
			t.Fatalf("serve died of the SIGHUP sent during package init:\n%s", p.out.String())
		}
		waitLine(t, p, "SIGHUP: DEK rotation requested")
		waitKeyID(t, p, c.socket, func(k string) bool { return k != before })
		trace := p.out.String()
		early, heavyAt := strings.Index(trace, inittraceEarlyHUP), strings.Index(trace, heavyInit)
		if early < 0 || early > heavyAt {
			t.Errorf("earlyhup's init is not before the Kubernetes packages' (at %d, %d)", early, heavyAt)
		}
		t.Logf("SIGHUP sent after %d of %d package inits", sentAfter, strings.Count(trace, "\ninit "))
		p.stop(t)
	})

	t.Run("other commands end on SIGHUP", func(t *testing.T) {
		for _, during := range []bool{true, false} {
			// decrypt waits on its stdin, which stays open.
			r, w, err := os.Pipe()
			must(t, err)
			t.Cleanup(func() { r.Close(); w.Close() })
			p := newBin(t, []string{"GODEBUG=inittrace=1"}, "decrypt", "--socket", filepath.Join(shortTemp(t), "none.sock"))
			p.cmd.Stdin = r
			heavy := p.out.when(heavyInit)
			p.start(t)
			select {
			case <-heavy:
			case <-p.exited:
				t.Fatalf("decrypt exited before %q:\n%s", heavyInit, p.out.String())
			}
			if !during {
				time.Sleep(300 * time.Millisecond) // in main, reading stdin
			}
			must(t, p.cmd.Process.Signal(syscall.SIGHUP))
			if st := p.wait(t, 10*time.Second); !diedOf(st, syscall.SIGHUP) {
				t.Errorf("decrypt, SIGHUP during init %v: %v, want killed by SIGHUP\n%s", during, st, p.out.String())
			}
		}
	})
}

// diedOf reports whether st is the end of a process killed by sig.
func diedOf(st *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
