package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// NewCmdKeygen builds `trousseau keygen`.
func NewCmdKeygen(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen FILE",
		Short: "Create a key file for a local backend (32 random bytes, base64, mode 0600)",
		Long: `Create a key file for a local backend: 32 random bytes, base64, mode
0600. An existing file is never overwritten.

Exit status: 0 when the file was created, 1 otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := local.GenerateKeyFile(args[0]); err != nil {
				return err
			}
			fmt.Fprintln(s.Out, "created", args[0])
			return nil
		},
	}
}
