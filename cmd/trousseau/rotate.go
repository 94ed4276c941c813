package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/internal/config"
)

type rotateOptions struct {
	streams
	configFile string
	stateDir   string
	timeout    time.Duration
	output     string
}

// NewCmdRotate builds `trousseau rotate`.
func NewCmdRotate(s streams) *cobra.Command {
	o := &rotateOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "rotate [--config FILE | --state-dir DIR] [-o text|json]",
		Short: "Ask the running plugin to rotate its DEK now, and wait for the outcome",
		Long: `Ask the plugin running on this config's state dir to rotate its DEK now,
and wait until the new DEK is current or the rotation is postponed (a
new DEK needs every backend: one that does not answer postpones it, and
the plugin retries at each probe). It prints the new key_id and
generation, or why the rotation was postponed.

The request goes over the plugin's admin socket, <stateDir>/admin.sock:
no network, no signal, no shell. Run it as the plugin's user or root,
where the state dir is: on a node, or in the plugin's container
(kubectl exec POD -- trousseau rotate). Without --config or --state-dir,
the config is ` + defaultConfigFile + ` where it exists, else the state dir is
the default, ` + config.DefaultStateDir + `.

Exit status: 0 when the DEK was rotated, 1 when the rotation was
postponed or no plugin answered. Then migrate storage so that every
object is rewritten with the new DEK (docs/operations.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", "", "the plugin's config `FILE`, for its stateDir")
	f.StringVar(&o.stateDir, "state-dir", "", "the plugin's state `DIR` (instead of --config)")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the outcome (a probe of every backend, then the rotation)")
	addOutputFlag(cmd, &o.output, formatText, formatJSON)
	return cmd
}

func (o *rotateOptions) validate() error {
	if o.configFile != "" && o.stateDir != "" {
		return errors.New("--config and --state-dir are exclusive: the state dir is the config's stateDir")
	}
	return checkFormat(o.output, formatText, formatJSON)
}

func (o *rotateOptions) run(ctx context.Context) error {
	dir, err := stateDirOf(o.configFile, o.stateDir)
	if err != nil {
		return err
	}
	r, err := askRotate(ctx, dir, o.timeout)
	if err != nil {
		return err
	}
	if o.output == formatJSON {
		if err := writeJSON(o.Out, r); err != nil {
			return err
		}
	} else if r.Result == "rotated" {
		fmt.Fprintf(o.Out, "rotated: key_id %s, generation %d (was %s, generation %d)\n", r.KeyID, r.Generation, r.PreviousKeyID, r.PreviousGeneration)
	} else {
		fmt.Fprintf(o.Out, "postponed: key_id %s, generation %d, stays current\n", r.KeyID, r.Generation)
	}
	if r.Result != "rotated" {
		return fmt.Errorf("rotation postponed (the plugin retries at each probe): %s", r.Reason)
	}
	return nil
}

// stateDirOf is dir, or the state dir of configFile (by default
// defaultConfigFile, where it exists).
func stateDirOf(configFile, dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	cfg, err := loadOrDefault(configFile)
	if err != nil {
		return "", err
	}
	return cfg.StateDir, nil
}

// defaultConfigFile is where the static pod, the systemd unit and the
// docs put the config: commands that talk to a running plugin read it
// when no --config is given.
const defaultConfigFile = "/etc/trousseau/config.yaml"

// loadOrDefault loads file; with none given, defaultConfigFile if it
// exists, else the defaults (socket, state dir, health address).
func loadOrDefault(file string) (*config.Config, error) {
	if file == "" {
		if _, err := os.Stat(defaultConfigFile); err != nil {
			cfg := &config.Config{}
			cfg.SetDefaults()
			return cfg, nil
		}
		cfg, err := config.Load(defaultConfigFile)
		if err != nil {
			return nil, fmt.Errorf("%w (read as the default config: give --config FILE)", err)
		}
		return cfg, nil
	}
	return config.Load(file)
}
