package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/config"
	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// NewCmdConfig builds `trousseau config`.
func NewCmdConfig(s streams) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with config files"}
	var file string
	var timeout time.Duration
	check := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config and probe every backend",
		Long: `Validate a config file and probe every backend, printing a table of
backend, reachability, key identity, latency and error; then check what
serve needs of this host: the state dir (not writable by others, files can
be created in it, a state file that parses), the socket's directory and
path, and that health.listen can be bound.

Exits non-zero if the config is invalid, fewer than threshold backends
answer, two backends answer with the same key, or serve would refuse to
start or could not save its DEK on this host. Each error names the config
field at fault and what to do. Nothing is changed: no directory is made,
no lock taken, and a plugin running on this config does not fail the
check. Run it as the user serve runs as: ownership and access are checked
as that user.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConfigCheck(cmd.Context(), s, file, timeout)
		},
	}
	check.Flags().StringVar(&file, "config", "", "config file (YAML)")
	check.Flags().DurationVar(&timeout, "timeout", kmsclients.DefaultCommandProbeTimeout, "deadline for each backend's probe")
	check.MarkFlagRequired("config")
	cmd.AddCommand(check)
	return cmd
}

func runConfigCheck(ctx context.Context, s streams, file string, timeout time.Duration) error {
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	if err := cfg.ValidateOnHost(); err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	backends, err := cfg.BuildBackends(ctx)
	if err != nil {
		return err
	}
	defer kmsclients.CloseAll(backends)
	results := kmsclients.ProbeAll(ctx, backends, timeout)
	up := printProbes(s, backends, results)
	n := len(backends)
	fmt.Fprintf(s.Out, "\nthreshold %d of %d; %d reachable\n", cfg.Threshold, n, up)
	if cfg.Threshold == 1 {
		fmt.Fprintln(s.Out, "WARNING: threshold 1 means no threshold custody: every backend holds the whole DEK and any one of them can decrypt.")
	}
	if gap := envelope.AuthenticationGap(cfg.Threshold, backends); gap != "" {
		fmt.Fprintln(s.Out, "WARNING: "+gap+".")
	}
	if up < n {
		fmt.Fprintf(s.Out, "note: creating or rotating a DEK needs all %d backends\n", n)
	}
	var errs []error
	if up < cfg.Threshold {
		errs = append(errs, fmt.Errorf("quorum not reachable: %d of %d backends answered, %d needed", up, n, cfg.Threshold))
	}
	errs = append(errs, sharedKeys(backends, results)...)
	fmt.Fprintln(s.Out)
	errs = append(errs, checkServeStart(ctx, s.Out, cfg)...)
	return errors.Join(errs...)
}

// printProbes writes the table of probe results, with each error in full
// (a key file's says what is wrong with it), and counts those that answered.
func printProbes(s streams, backends []kmsclients.Backend, results []kmsclients.ProbeResult) (up int) {
	tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tREACHABLE\tKEY IDENTITY\tLATENCY\tERROR")
	for i, r := range results {
		reach, identity, errText := "yes", r.KeyIdentity, ""
		if r.Err != nil {
			reach, identity, errText = "no", "-", fmt.Sprintf("%s: %v", kmsclients.Kind(r.Err), r.Err)
		} else {
			up++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", backends[i].Name(), reach, identity, r.Took.Round(time.Microsecond), errText)
	}
	tw.Flush()
	return up
}

// sharedKeys reports backends that answered with one key between them (a
// copied key file, one KMS key under two names): that key would hold two
// shares, and serve would never make a first DEK.
func sharedKeys(backends []kmsclients.Backend, results []kmsclients.ProbeResult) []error {
	var errs []error
	first := map[string]int{}
	for i, r := range results {
		if r.Err != nil {
			continue
		}
		key := kmsclients.CustodianKey(backends[i], r.KeyIdentity)
		if j, dup := first[key]; dup {
			errs = append(errs, fmt.Errorf("backends %s and %s hold the same key (%s): each backend needs a key of its own (for a local backend: trousseau keygen FILE)", backends[j].Name(), backends[i].Name(), r.KeyIdentity))
			continue
		}
		first[key] = i
	}
	return errs
}
