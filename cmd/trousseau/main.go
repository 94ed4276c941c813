// Command trousseau is the Trousseau KMS plugin and its operator tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/cmd/trousseau/internal/earlyhup"
)

// streams are the command's input and outputs, so tests can capture them.
type streams struct {
	In       io.Reader
	Out, Err io.Writer
	// HUP holds the SIGHUPs caught since the process started
	// ([earlyhup.Signals]), for serve; nil in in-process tests, where
	// serve catches SIGHUP itself.
	HUP <-chan os.Signal
}

// NewRootCmd builds the whole command tree.
func NewRootCmd(s streams) *cobra.Command {
	root := &cobra.Command{
		Use:           "trousseau",
		Short:         "Threshold KMS plugin for Kubernetes: secrets stay readable with any k of n KMS backends, and no single one can read them",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.AddCommand(
		NewCmdServe(s),
		NewCmdStatus(s),
		NewCmdEncrypt(s),
		NewCmdDecrypt(s),
		NewCmdConfig(s),
		NewCmdKeygen(s),
		NewCmdRecover(s), NewCmdDecryptValue(s),
		NewCmdDrill(s),
		NewCmdRotate(s),
		NewCmdOfficer(s),
		NewCmdVersion(s),
	)
	completeFlagValues(root)
	return root
}

func main() {
	cmd := NewRootCmd(streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, HUP: earlyhup.Signals()})
	// Only serve takes SIGHUP; every other command ends on it.
	if c, _, err := cmd.Find(os.Args[1:]); err != nil || c.Name() != "serve" {
		earlyhup.Release()
	}
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		if le := (*loggedError)(nil); !errors.As(err, &le) {
			fmt.Fprintln(os.Stderr, "trousseau:", err)
		}
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
