package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// kmsResources are what kube-apiserver's EncryptionConfiguration most
// often sends through a KMS plugin (deploy/encryption-config.yaml's), for
// completing --resources.
var kmsResources = []string{"secrets", "configmaps"}

// completeFlagValues makes the shell complete the values of the flags
// that name files and directories, everywhere in the tree: the config
// as YAML, state and output directories as directories. The flags that
// take a fixed set of values complete them where they are added
// (addOutputFlag, completeValues).
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
