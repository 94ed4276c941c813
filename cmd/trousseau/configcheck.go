package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Exit codes of `config check`.
const (
	checkOK      = 0 // serve would start and make or unlock its DEK now
	checkInvalid = 1 // the config, or a file it names, is unusable
	checkUnready = 2 // serve would start, unready
)

type configCheckOptions struct {
	streams
	file    string
	timeout time.Duration
	offline bool
	output  string
}

// NewCmdConfig builds `trousseau config`.
func NewCmdConfig(s streams) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with config files"}
	cmd.AddCommand(newCmdConfigCheck(s))
	return cmd
}

func newCmdConfigCheck(s streams) *cobra.Command {
	o := &configCheckOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "check --config FILE [--offline] [-o text|json]",
		Short: "Validate a config, probe every backend, and tell whether serve would start ready",
		Long: `Validate a config file and probe every backend, printing a table of
backend, reachability, key identity, latency and error; then check what
serve needs of this host: the state dir (not writable by others, files can
be created in it, a state file that parses), the socket's directory and
path, and that health.listen can be bound.

Exit status:
  0  serve would start and make or unlock its DEK now
  1  the config is invalid, or a file it names is unusable (a key file
     missing, open to others or not a key), two backends hold one key,
     or serve would refuse to start or could not save a DEK on this host
  2  the config is valid but serve would start unready now: fewer than
     threshold backends answer, or there is no DEK yet and the first one
     needs every backend

--offline contacts no backend (local key files are still read): it exits
0 or 1 only. Each error names the config field at fault and what to do.
Nothing is changed: no directory is made, no lock taken, and a plugin
running on this config does not fail the check. Run it as the user serve
runs as: ownership and access are checked as that user.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(o.output, formatText, formatJSON); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.file, "config", "", "config `FILE` (YAML)")
	f.DurationVar(&o.timeout, "timeout", kmsclients.DefaultCommandProbeTimeout, "deadline for each backend's probe")
	f.BoolVar(&o.offline, "offline", false, "contact no backend: check the file, local key files and this host only (exit 0 or 1)")
	addOutputFlag(cmd, &o.output, formatText, formatJSON)
	cmd.MarkFlagRequired("config")
	return cmd
}

// checkReport is what `config check` found; -o json writes it as is
// (docs/reference/cli.md lists its fields).
type checkReport struct {
	Config     string         `json:"config"`
	Offline    bool           `json:"offline"`
	ExitCode   int            `json:"exitCode"`
	Result     string         `json:"result"` // ok, invalid or unready
	Threshold  int            `json:"threshold"`
	Reachable  int            `json:"reachable"`
	Backends   []checkBackend `json:"backends"`
	CurrentDEK *checkDEK      `json:"currentDEK"`
	Invalid    []string       `json:"invalid"`  // why exit 1
	Unready    []string       `json:"unready"`  // why exit 2
	Warnings   []string       `json:"warnings"` // weak custody, to know
	Notes      []string       `json:"notes"`    // what the host checks saw
}

type checkBackend struct {
	Name           string  `json:"name"`
	Kind           string  `json:"kind"`
	Probed         bool    `json:"probed"` // false: --offline, a remote backend
	Reachable      bool    `json:"reachable"`
	KeyIdentity    string  `json:"keyIdentity,omitempty"`
	LatencySeconds float64 `json:"latencySeconds"`
	ErrorKind      string  `json:"errorKind,omitempty"`
	Error          string  `json:"error,omitempty"`
}

type checkDEK struct {
	KeyID      string    `json:"keyID"`
	Generation uint32    `json:"generation"`
	Threshold  int       `json:"threshold"`
	Backends   []string  `json:"backends"` // its shares' custodians, in order
	Created    time.Time `json:"created"`
}

func (o *configCheckOptions) run(ctx context.Context) error {
	r := &checkReport{Config: o.file, Offline: o.offline, Backends: []checkBackend{}}
	if cfg, err := o.loadConfig(); err != nil {
		r.Invalid = append(r.Invalid, err.Error())
	} else {
		r.Threshold = cfg.Threshold
		o.check(ctx, r, cfg)
	}
	r.finish()
	if o.output == formatJSON {
		if err := writeJSON(o.Out, r); err != nil {
			return err
		}
	} else {
		r.writeText(o.Out)
	}
	return r.err()
}

func (o *configCheckOptions) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(o.file)
	if err != nil {
		return nil, err
	}
	if err := cfg.ValidateOnHost(); err != nil {
		return nil, fmt.Errorf("config %s: %w", o.file, err)
	}
	return cfg, nil
}

func (o *configCheckOptions) check(ctx context.Context, r *checkReport, cfg *config.Config) {
	backends, err := o.probeBackends(ctx, r, cfg)
	if err != nil {
		r.Invalid = append(r.Invalid, err.Error())
		return
	}
	defer kmsclients.CloseAll(backends)
	if _, err := cfg.RecoveryPolicy(); err != nil {
		r.Invalid = append(r.Invalid, err.Error())
	}
	if cfg.Threshold == 1 {
		r.Warnings = append(r.Warnings, "threshold 1 means no threshold custody: every backend holds the whole DEK and any one of them can decrypt.")
	}
	if gap := envelope.AuthenticationGap(cfg.Threshold, backends); gap != "" && !o.offline {
		r.Warnings = append(r.Warnings, gap+".")
	}
	for _, w := range processFIPSWarnings(cfg) {
		r.Warnings = append(r.Warnings, w+".")
	}
	var lines bytes.Buffer
	for _, err := range checkServeStart(ctx, &lines, cfg) {
		r.Invalid = append(r.Invalid, err.Error())
	}
	if s := strings.TrimSpace(lines.String()); s != "" {
		r.Notes = strings.Split(s, "\n")
	}
	if st, err := envelope.CheckStateDir(cfg.StateDir); err == nil && st.Current != nil {
		h := st.Current
		r.CurrentDEK = &checkDEK{KeyID: h.KeyID(), Generation: h.Generation, Threshold: h.Threshold, Created: h.Created.UTC()}
		for _, s := range h.Shares {
			r.CurrentDEK.Backends = append(r.CurrentDEK.Backends, s.Backend)
		}
	}
	if !o.offline {
		r.readiness()
	}
}

// probeBackends builds and probes the backends (with --offline, only the
// local ones: reading a key file contacts no one) into r. A backend
// that fails on a file the config names is an invalid config; one that
// does not answer makes serve unready (readiness).
func (o *configCheckOptions) probeBackends(ctx context.Context, r *checkReport, cfg *config.Config) ([]kmsclients.Backend, error) {
	probed := *cfg
	if o.offline {
		probed.Backends = nil
		for _, b := range cfg.Backends {
			if b.Kind() == "local" {
				probed.Backends = append(probed.Backends, b)
			}
		}
	}
	backends, err := probed.BuildBackends(ctx)
	if err != nil {
		return nil, err
	}
	results := kmsclients.ProbeAll(ctx, backends, o.timeout)
	got := map[string]kmsclients.ProbeResult{}
	for i, b := range backends {
		got[b.Name()] = results[i]
	}
	for _, b := range cfg.Backends {
		res, ok := got[b.Name]
		cb := checkBackend{Name: b.Name, Kind: b.Kind(), Probed: ok, Reachable: ok && res.Err == nil,
			KeyIdentity: res.KeyIdentity, LatencySeconds: res.Took.Seconds()}
		if res.Err != nil {
			cb.ErrorKind, cb.Error = kmsclients.Kind(res.Err), res.Err.Error()
			if namesAFile(b.Kind(), res.Err) {
				r.Invalid = append(r.Invalid, res.Err.Error())
			}
		} else if ok {
			r.Reachable++
		}
		r.Backends = append(r.Backends, cb)
	}
	r.Invalid = append(r.Invalid, errorTexts(sharedKeys(backends, results))...)
	return backends, nil
}

// namesAFile reports whether a probe failed on a file of the config (a
// local key file, a PIN or token file) rather than on a backend that
// does not answer: an operator must fix the file.
func namesAFile(kind string, err error) bool {
	var pe *fs.PathError
	return kind == "local" || errors.As(err, &pe)
}

// readiness adds to r.Unready why serve would start unready: too few
// backends answer to unlock the stored DEK or, when a new one is needed,
// to make it (which needs every backend).
func (r *checkReport) readiness() {
	n := len(r.Backends)
	var down, names []string
	for _, b := range r.Backends {
		names = append(names, b.Name)
		if !b.Reachable {
			down = append(down, b.Name)
		}
	}
	switch dek := r.CurrentDEK; {
	case dek != nil && len(down) > 0 && (dek.Threshold != r.Threshold || !slices.Equal(dek.Backends, names)):
		r.Unready = append(r.Unready, fmt.Sprintf("the current DEK %s is %d of %s, the config says %d of %s: serve seals no write under it and makes a new DEK first, which needs all %d backends: %s did not answer",
			dek.KeyID, dek.Threshold, strings.Join(dek.Backends, ","), r.Threshold, strings.Join(names, ","), n, strings.Join(down, ", ")))
	case dek != nil && r.Reachable < dek.Threshold:
		r.Unready = append(r.Unready, fmt.Sprintf("quorum not reachable: %d of %d backends answered, %d needed to unlock the current DEK %s (down: %s)",
			r.Reachable, n, dek.Threshold, dek.KeyID, strings.Join(down, ", ")))
	case dek == nil && r.Reachable < r.Threshold:
		r.Unready = append(r.Unready, fmt.Sprintf("quorum not reachable: %d of %d backends answered, %d needed (down: %s)", r.Reachable, n, r.Threshold, strings.Join(down, ", ")))
	case dek == nil && len(down) > 0:
		r.Unready = append(r.Unready, fmt.Sprintf("no DEK yet, and the first one needs all %d backends: %s did not answer", n, strings.Join(down, ", ")))
	}
}

func (r *checkReport) finish() {
	switch {
	case len(r.Invalid) > 0:
		r.ExitCode, r.Result = checkInvalid, "invalid"
	case len(r.Unready) > 0:
		r.ExitCode, r.Result = checkUnready, "unready"
	default:
		r.ExitCode, r.Result = checkOK, "ok"
	}
	for _, l := range []*[]string{&r.Invalid, &r.Unready, &r.Warnings, &r.Notes} {
		if *l == nil {
			*l = []string{}
		}
	}
}

// err is what goes to stderr, with the exit code.
func (r *checkReport) err() error {
	switch r.ExitCode {
	case checkInvalid:
		msg := strings.Join(r.Invalid, "\n")
		if len(r.Unready) > 0 {
			msg += "\nand serve would start unready now: " + strings.Join(r.Unready, "; ")
		}
		return errors.New(msg)
	case checkUnready:
		return &exitError{code: checkUnready, err: fmt.Errorf("serve would start unready now: %s", strings.Join(r.Unready, "; "))}
	}
	return nil
}

func (r *checkReport) writeText(out io.Writer) {
	if len(r.Backends) == 0 && r.Threshold == 0 {
		return // the config did not load: stderr says why
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tREACHABLE\tKEY IDENTITY\tLATENCY\tERROR")
	for _, b := range r.Backends {
		reach, identity, errText := "yes", b.KeyIdentity, ""
		switch {
		case !b.Probed:
			reach, identity = "not probed (--offline)", "-"
		case !b.Reachable:
			reach, identity, errText = "no", "-", b.ErrorKind+": "+b.Error
		}
		latency := time.Duration(b.LatencySeconds * float64(time.Second)).Round(time.Microsecond)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Name, reach, identity, latency, errText)
	}
	tw.Flush()
	if r.Offline {
		fmt.Fprintf(out, "\nthreshold %d of %d; offline: remote backends not contacted\n", r.Threshold, len(r.Backends))
	} else {
		fmt.Fprintf(out, "\nthreshold %d of %d; %d reachable\n", r.Threshold, len(r.Backends), r.Reachable)
	}
	for _, w := range r.Warnings {
		fmt.Fprintln(out, "WARNING: "+w)
	}
	if !r.Offline && r.Reachable < len(r.Backends) {
		fmt.Fprintf(out, "note: creating or rotating a DEK needs all %d backends\n", len(r.Backends))
	}
	fmt.Fprintln(out)
	for _, n := range r.Notes {
		fmt.Fprintln(out, n)
	}
}

func errorTexts(errs []error) []string {
	var out []string
	for _, err := range errs {
		out = append(out, err.Error())
	}
	return out
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
