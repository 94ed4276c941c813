// Package earlyhup catches SIGHUP from the first moments of the process,
// so that one sent while `trousseau serve` starts (an operator's or a
// config reloader's `kill -HUP` racing a restart) does not end it: until
// a handler is installed, Go's default action for SIGHUP is to exit.
//
// Its init runs as soon as os/signal is initialized, before the heavy
// packages (the KMS SDKs, Kubernetes) whose inits take most of the
// start-up time, and long before main: Go initializes packages in
// dependency order, and this one depends on nothing else. Check with
// GODEBUG=inittrace=1 that it stays near the top.
//
// main hands the signals held to serve, which takes them as rotation
// requests, and calls Release for every other command, which then ends
// on SIGHUP as any program does.
package earlyhup

import (
	"os"
	"os/signal"
	"syscall"
)

// held keeps the first SIGHUP until serve reads it; more that arrive
// before then are one rotation request anyway.
var held = make(chan os.Signal, 1)

// ignoredAtStart: SIGHUP was ignored when the process started (nohup).
var ignoredAtStart bool

func init() {
	ignoredAtStart = signal.Ignored(syscall.SIGHUP)
	signal.Notify(held, syscall.SIGHUP)
}

// Signals are the SIGHUPs caught since the process started.
func Signals() <-chan os.Signal { return held }

// Release makes a command that does not handle SIGHUP end on it as any
// program does (or not, if SIGHUP was ignored when the process started,
// as under nohup). SIGHUP stays caught, and the first one, caught before
// or after, is delivered again once its default action is back. Resetting
// at once and then draining held would lose a SIGHUP that the runtime had
// taken but not yet put on held.
func Release() {
	if ignoredAtStart {
		// Ignored again at once, so that the processes it starts inherit
		// that too, as they would have without this package.
		signal.Ignore(syscall.SIGHUP)
		return
	}
	go func() {
		<-held
		signal.Reset(syscall.SIGHUP)
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
	}()
}
