package main

import (
	"context"
	"fmt"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/config"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
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
backend, reachability, key identity and latency. Exits non-zero if the
config is invalid or fewer than threshold backends answer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConfigCheck(cmd.Context(), s, file, timeout)
		},
	}
	check.Flags().StringVar(&file, "config", "", "config file (YAML)")
	check.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline for each backend's probe")
	check.MarkFlagRequired("config")
	cmd.AddCommand(check)
	return cmd
}

type probeRow struct {
	name, identity, errText string
	up                      bool
	took                    time.Duration
}

func runConfigCheck(ctx context.Context, s streams, file string, timeout time.Duration) error {
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	backends, err := cfg.BuildBackends(ctx)
	if err != nil {
		return err
	}
	defer kmsclients.CloseAll(backends)
	rows := probeBackends(ctx, backends, timeout)
	tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tREACHABLE\tKEY IDENTITY\tLATENCY\tERROR")
	up := 0
	for _, r := range rows {
		reach := "no"
		if r.up {
			reach, up = "yes", up+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.name, reach, r.identity, r.took.Round(time.Microsecond), r.errText)
	}
	tw.Flush()
	n := len(backends)
	fmt.Fprintf(s.Out, "\nthreshold %d of %d; %d reachable\n", cfg.Threshold, n, up)
	if cfg.Threshold == 1 {
		fmt.Fprintln(s.Out, "WARNING: threshold 1 means no threshold custody: every backend holds the whole DEK and any one of them can decrypt.")
	}
	if up < n {
		fmt.Fprintf(s.Out, "note: creating or rotating a DEK needs all %d backends\n", n)
	}
	if up < cfg.Threshold {
		return fmt.Errorf("quorum not reachable: %d of %d backends answered, %d needed", up, n, cfg.Threshold)
	}
	return nil
}

func probeBackends(ctx context.Context, backends []kmsclients.Backend, timeout time.Duration) []probeRow {
	rows := make([]probeRow, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			id, err := b.Probe(pctx)
			rows[i] = probeRow{name: b.Name(), identity: id, up: err == nil, took: time.Since(start)}
			if err != nil {
				rows[i].identity, rows[i].errText = "-", fmt.Sprintf("%s: %v", kmsclients.Kind(err), err)
			}
		}()
	}
	wg.Wait()
	return rows
}

// NewCmdKeygen builds `trousseau keygen`.
func NewCmdKeygen(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen FILE",
		Short: "Create a key file for a local backend (32 random bytes, base64, mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := local.GenerateKeyFile(args[0]); err != nil {
				return err
			}
			fmt.Fprintln(s.Out, "created", args[0])
			return nil
		},
	}
}
