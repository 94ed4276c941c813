package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// kmsResources complete --resources: the resources
// deploy/encryption-config.yaml sends through a KMS plugin.
var kmsResources = []string{"secrets", "configmaps"}

// completeFlagValues makes the shell complete the flags that name files
// (the config as YAML) and directories, everywhere in the tree; flags with
// fixed values complete where they are added ([completeValues]).
func completeFlagValues(root *cobra.Command) {
	for _, cmd := range append([]*cobra.Command{root}, allCommands(root)...) {
		etcdClient := cmd.Flags().Lookup("etcd-endpoints") != nil
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			switch f.Name {
			case "config":
				cmd.MarkFlagFilename(f.Name, "yaml", "yml")
			case "state-dir", "out-dir":
				cmd.MarkFlagDirname(f.Name)
			case "socket", "etcd-snapshot":
				cmd.MarkFlagFilename(f.Name)
			case "cacert", "cert", "key":
				if etcdClient { // decrypt-value's --key is an etcd key
					cmd.MarkFlagFilename(f.Name)
				}
			case "resources":
				cmd.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(kmsResources, cobra.ShellCompDirectiveNoFileComp))
			}
		})
	}
}

// allCommands is every command under cmd, depth first.
func allCommands(cmd *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range cmd.Commands() {
		out = append(out, c)
		out = append(out, allCommands(c)...)
	}
	return out
}
