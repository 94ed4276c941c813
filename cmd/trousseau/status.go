package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
	kmsv2 "k8s.io/kms/apis/v2"
)

type statusOptions struct {
	streams
	configFile string
	socket     string
	health     string
	output     string
}

// NewCmdStatus builds `trousseau status`.
func NewCmdStatus(s streams) *cobra.Command {
	o := &statusOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "status [--config FILE] [--socket PATH] [--health ADDR] [-o text|json]",
		Short: "Ask a running plugin for its KMS v2 status (as kube-apiserver does), and what else an operator should look at",
		Long: `Ask the plugin on its socket for the KMS v2 status kube-apiserver sees
(version, healthz, key_id), then read its health endpoint (/readyz) for
the current DEK and warnings kube-apiserver does not see (a rotation
overdue, a backend down, a custody margin at 0).

The socket and the health address come from --config (serve's config;
a dev mode's <state-dir>/config.yaml works too); without it, from
` + defaultConfigFile + ` where it exists, else the defaults. --socket and
--health override them; --health "" skips the health endpoint.

Exit status: 0 when the plugin says healthz ok, 1 when it says
otherwise or does not answer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(cmd); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", "", "the plugin's config `FILE`, for its socket and health.listen")
	f.StringVar(&o.socket, "socket", "", "the plugin's socket (default: the config's)")
	f.StringVar(&o.health, "health", "", "the plugin's health address (default: the config's health.listen); empty to skip")
	addOutputFlag(cmd, &o.output, formatText, formatJSON)
	return cmd
}

// complete takes what the flags leave out from the config.
func (o *statusOptions) complete(cmd *cobra.Command) error {
	if err := checkFormat(o.output, formatText, formatJSON); err != nil {
		return err
	}
	f := cmd.Flags()
	if o.configFile == "" && f.Changed("socket") && f.Changed("health") {
		return nil // nothing to read from a config
	}
	cfg, err := loadOrDefault(o.configFile)
	if err != nil {
		return err
	}
	if !f.Changed("socket") {
		o.socket = cfg.Socket
	}
	if !f.Changed("health") {
		o.health = dialable(cfg.Health.Listen)
	}
	return nil
}

// dialable is a listen address to connect to: an unspecified host
// (":8787", "0.0.0.0:8787") is this machine's loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// statusReport is what status found; -o json writes it
// (docs/reference/cli.md).
type statusReport struct {
	Socket   string        `json:"socket"`
	Version  string        `json:"version"`
	Healthz  string        `json:"healthz"`
	KeyID    string        `json:"keyID"`
	Health   *healthDetail `json:"health"` // nil with --health ""
	ExitCode int           `json:"exitCode"`
	Error    string        `json:"error,omitempty"`
}

// healthDetail is what /readyz says after its first line.
type healthDetail struct {
	Address    string `json:"address"`
	Ready      bool   `json:"ready"`
	CurrentDEK string `json:"currentDEK,omitempty"` // "KEY_ID, generation N, made at TIME"
	// RecoveryBranch: "K of M officers (margin N), headers signed by ID".
	RecoveryBranch string   `json:"recoveryBranch,omitempty"`
	Warnings       []string `json:"warnings"`
	Error          string   `json:"error,omitempty"` // the endpoint did not answer
}

func (o *statusOptions) run(ctx context.Context) error {
	r := &statusReport{Socket: o.socket}
	err := withPlugin(ctx, o.socket, func(ctx context.Context, c kmsv2.KeyManagementServiceClient) error {
		st, err := c.Status(ctx, &kmsv2.StatusRequest{})
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		r.Version, r.Healthz, r.KeyID = st.Version, st.Healthz, st.KeyId
		if o.health != "" {
			r.Health = readHealth(ctx, o.health)
		}
		if st.Healthz != "ok" {
			return fmt.Errorf("plugin is not healthy: %s", st.Healthz)
		}
		return nil
	})
	if err != nil {
		r.ExitCode, r.Error = 1, err.Error()
	}
	if o.output == formatJSON {
		if werr := writeJSON(o.Out, r); werr != nil {
			return werr
		}
	} else if r.Version != "" {
		r.writeText(o.Out)
	}
	return err
}

func (r *statusReport) writeText(out io.Writer) {
	fmt.Fprintf(out, "version: %s\nhealthz: %s\nkey_id:  %s\n", r.Version, r.Healthz, r.KeyID)
	h := r.Health
	switch {
	case h == nil:
	case h.Error != "":
		fmt.Fprintf(out, "detail:  %s/readyz did not answer (%s); give --config with the plugin's config, or --health with its health.listen\n", h.Address, h.Error)
	default:
		if h.CurrentDEK != "" {
			fmt.Fprintf(out, "current DEK: %s\n", h.CurrentDEK)
		}
		if h.RecoveryBranch != "" {
			fmt.Fprintf(out, "recovery branch: %s\n", h.RecoveryBranch)
		}
		for _, w := range h.Warnings {
			fmt.Fprintf(out, "warning: %s\n", w)
		}
	}
}

// readHealth reads /readyz at addr: its first line is "ok" or why not,
// then the current DEK and one "warning:" line per thing to look at.
func readHealth(ctx context.Context, addr string) *healthDetail {
	h := &healthDetail{Address: addr, Warnings: []string{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		h.Error = err.Error()
		return h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.Error = err.Error()
		return h
	}
	defer resp.Body.Close()
	h.Ready = resp.StatusCode == http.StatusOK
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<10))
	for first := true; sc.Scan(); first = false {
		line := sc.Text()
		if dek, ok := strings.CutPrefix(line, "current DEK: "); ok && !first {
			h.CurrentDEK = dek
		} else if b, ok := strings.CutPrefix(line, "recovery branch: "); ok && !first {
			h.RecoveryBranch = b
		} else if w, ok := strings.CutPrefix(line, "warning: "); ok && !first {
			h.Warnings = append(h.Warnings, w)
		}
	}
	return h
}
