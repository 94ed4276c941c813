// Package earlyhup catches SIGHUP from package init, so that a `kill -HUP`
// racing the start of `trousseau serve` is a rotation request rather than
// Go's default action, exit. It depends on nothing heavy, so its init runs
// before the KMS SDKs' and Kubernetes' (check with GODEBUG=inittrace=1).
//
// main hands [Signals] to serve and calls [Release] for every other command.
package earlyhup

import (
	"os"
	"os/signal"
	"syscall"
)

// held keeps the first SIGHUP until serve reads it; later ones would be
// the same rotation request.
var held = make(chan os.Signal, 1)

// ignoredAtStart: SIGHUP was ignored when the process started (nohup).
var ignoredAtStart bool

func init() {
	ignoredAtStart = signal.Ignored(syscall.SIGHUP)
	signal.Notify(held, syscall.SIGHUP)
}

// Signals are the SIGHUPs caught since the process started.
func Signals() <-chan os.Signal { return held }

// Release makes SIGHUP end the process again (unless it was ignored at
// start, as under nohup). The first SIGHUP, caught before or after, is
// raised again once the default action is back: resetting first and then
// draining held would lose one the runtime had taken but not yet queued.
func Release() {
	if ignoredAtStart {
		// At once, so that child processes inherit it.
		signal.Ignore(syscall.SIGHUP)
		return
	}
	go func() {
		<-held
		signal.Reset(syscall.SIGHUP)
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
	}()
}
