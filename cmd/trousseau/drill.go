package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/safetext"
	"github.com/trousseau-io/trousseau/kmsclients"
)

type drillOptions struct {
	recoverOptions // the etcd source flags and the config
	stateDir       string
	minMargin      int
	output         string
}

// NewCmdDrill builds `trousseau drill`.
func NewCmdDrill(s streams) *cobra.Command {
	o := &drillOptions{recoverOptions: recoverOptions{streams: s}}
	cmd := &cobra.Command{
		Use:   "drill (--config FILE | --officer-packet FILE [--officer-identity FILE...] | both) [--etcd-snapshot FILE | --etcd-endpoints URLS] [--state-dir DIR]",
		Short: "Custody drill: check that every DEK protecting data can still be recovered, through the custodians and the officers, and with how much margin",
		Long: `Ask every backend that holds a share of each DEK (not just the first k)
for its share, and check each share against the DEK's commitment. The
DEKs come from the headers stored beside the objects of an etcd snapshot
or a live etcd (no object is decrypted), and from the plugin's state dir
(the current DEK and any set aside as unusable). With neither etcd flag,
the state dir alone is drilled.

Per DEK: key_id, generation, creation time, the objects and resources it
protects, which backends gave a valid share and why the others did not,
and the margin: working backends minus k.

With --officer-packet, each header's officers' branch is checked too,
with no identity: its threshold k' of m, its signature against the
packet's signing keys, which officer each share is sealed to (by
recipient; shares sealed to a recipient the packet does not know are
flagged and not counted), and the officers' margin: officers the packet
knows minus k'. With --officer-identity (repeatable) the branch is also
proved: the shares those identities open, and, when at least k' open,
that they combine to the DEK (fewer is no failure: officers may drill one
at a time). Without --config only the officers' branch is drilled: no
custodian is asked.

Exit status: 0 when every DEK has a margin of at least --min-margin, 1
when some DEK is below it (at 0, one more lost backend loses data) or
the drill could not run, 2 when some DEK is already unrecoverable. With
--officer-packet, 1 also when some DEK has no officers' branch, a
signature that does not verify, fewer known officers than k', or
officers' shares that do not combine.
-o json writes the report as JSON (docs/reference/cli.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	o.addSourceFlags(f)
	f.StringVar(&o.prefix, "prefix", recovery.DefaultPrefix, "kube-apiserver's --etcd-prefix")
	f.StringVar(&o.stateDir, "state-dir", "", "the plugin's state dir, whose current and earlier DEKs are checked too (default: the config's stateDir, if it is there)")
	f.IntVar(&o.minMargin, "min-margin", 1, "the margin every DEK must keep for exit status 0")
	addOutputFlag(cmd, &o.output, formatText, formatJSON)
	f.DurationVar(&o.probeTimeout, "probe-timeout", kmsclients.DefaultCommandProbeTimeout, "deadline for each backend's health probe at start")
	f.DurationVar(&o.unwrapTimeout, "unwrap-timeout", time.Minute, "deadline to drill one DEK (every backend)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress lines")
	o.addOfficerFlags(f, false)
	return cmd
}

func (o *drillOptions) validate() error {
	switch {
	case o.configFile == "" && o.officerPacket == "":
		return errors.New("give --config FILE (drill the custodians), --officer-packet FILE (the officers' branch), or both")
	case len(o.officerIDs) > 0 && o.officerPacket == "":
		return errors.New("--officer-identity needs --officer-packet FILE: the drill checks headers against its signing keys and officers")
	case o.configFile == "" && o.snapshot == "" && len(o.endpoints) == 0 && o.stateDir == "":
		return errors.New("without --config, say what to drill: --etcd-snapshot FILE, --etcd-endpoints URLS or --state-dir DIR")
	case o.snapshot != "" && len(o.endpoints) > 0:
		return errors.New("--etcd-snapshot and --etcd-endpoints are exclusive")
	case o.output == "table":
		// The name of text before -o meant the format on every command.
		o.output = formatText
	case checkFormat(o.output, formatText, formatJSON) != nil:
		return checkFormat(o.output, formatText, formatJSON)
	case o.minMargin < 0:
		return fmt.Errorf("--min-margin must be 0 or more, got %d", o.minMargin)
	}
	return nil
}

func (o *drillOptions) run(ctx context.Context) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := recovery.DrillOptions{CheckTimeout: o.unwrapTimeout, Prefix: o.prefix, StateDir: o.stateDir}
	if o.snapshot != "" || len(o.endpoints) > 0 {
		opts.Source = o.source()
	}
	if o.configFile != "" {
		cfg, kr, err := o.openKeyring(ctx)
		if err != nil {
			return err
		}
		defer kr.Close()
		opts.Envelope = kr.Envelope
		o.defaultStateDir(&opts, cfg.StateDir)
	}
	if o.officerPacket != "" {
		od, err := o.officerDrill()
		if err != nil {
			return err
		}
		opts.Officers = od
	}
	if !o.quiet {
		opts.Progress = o.Err
	}
	report, err := recovery.Drill(ctx, opts)
	if err != nil {
		return safetext.Error(err)
	}
	if o.output == formatJSON {
		err = writeDrillJSON(o.Out, report, o.minMargin)
	} else {
		err = writeDrillTable(o.Out, report, o.minMargin)
	}
	if err != nil {
		return err
	}
	if code := report.ExitCode(o.minMargin); code != 0 {
		return &exitError{code: code, err: fmt.Errorf("drill: %s", drillVerdict(report, code, o.minMargin))}
	}
	return nil
}

// defaultStateDir drills the config's state dir when --state-dir is not
// given and it is there.
func (o *drillOptions) defaultStateDir(opts *recovery.DrillOptions, stateDir string) {
	if opts.StateDir != "" {
		return
	}
	opts.StateDir = stateDir
	// With etcd, the state dir adds the current DEK (which may seal
	// nothing yet); a recovery machine may well not have it.
	if _, err := os.Stat(stateDir); err != nil && opts.Source != nil {
		safetext.Fprintf(o.Err, "note: state dir %s not readable here (%v): the node's current DEK is not checked; give --state-dir to check it\n", stateDir, err)
		opts.StateDir = ""
	}
}

// officerDrill reads the packet, and the identities that prove the branch.
func (o *drillOptions) officerDrill() (*recovery.OfficerDrill, error) {
	quietKubeLogs()
	p, err := o.readPacket()
	if err != nil {
		return nil, err
	}
	od := &recovery.OfficerDrill{Trusted: p.TrustedKeys(), Holder: p.OfficerFor}
	if len(o.officerIDs) > 0 {
		if od.Prover, err = o.officerKeyring(p, false); err != nil {
			return nil, err
		}
	}
	return od, nil
}

func drillVerdict(r *recovery.DrillReport, code, minMargin int) string {
	if code == 2 {
		return "some DEK is unrecoverable now"
	}
	for _, d := range r.DEKs {
		if d.Officers != nil && d.Officers.Problem() != "" {
			return "some DEK fails the officers' drill (see the report)"
		}
	}
	return fmt.Sprintf("some DEK has a margin below %d", minMargin)
}

// shareState names how one backend did, for people and for JSON.
func shareState(ok bool, err error) string {
	switch {
	case ok:
		return "ok"
	case errors.Is(err, envelope.ErrShareUnverified), errors.Is(err, envelope.ErrNoShareFits), errors.Is(err, envelope.ErrSharesDisagree):
		return "unverified"
	case errors.Is(err, envelope.ErrHeaderTampered):
		return "agrees"
	}
	return kmsclients.Kind(err)
}

func writeDrillTable(w io.Writer, r *recovery.DrillReport, minMargin int) error {
	if r.Describe != "" {
		safetext.Fprintf(w, "source: %s\n", r.Describe)
	}
	if custodiansDrilled(r) {
		if err := writeCustodiansTable(w, r, minMargin); err != nil {
			return err
		}
	}
	if err := writeOfficersTable(w, r); err != nil {
		return err
	}
	if r.NotTrousseau > 0 {
		fmt.Fprintf(w, "%d KMS values carry no Trousseau header (another provider, or damaged)\n", r.NotTrousseau)
	}
	return nil
}

func writeCustodiansTable(w io.Writer, r *recovery.DrillReport, minMargin int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tGEN\tCREATED\tOBJECTS\tK\tBACKENDS\tMARGIN")
	for _, d := range r.DEKs {
		switch {
		case d.Tampered:
			safetext.Fprintf(tw, "%s\t%d\t-\t%d\t-\tTAMPERED: %v\t-\n", d.KeyID, d.Generation, d.Objects, d.Err)
			continue
		case d.Err != nil:
			safetext.Fprintf(tw, "-\t-\t-\t%d\t-\tunusable header: %v\t-\n", d.Objects, d.Err)
			continue
		}
		var backends []string
		for _, s := range d.Shares {
			backends = append(backends, s.Backend+"="+shareState(s.OK, s.Err))
		}
		margin := fmt.Sprint(d.Margin())
		if d.Margin() < 0 {
			margin = "UNRECOVERABLE"
		} else if d.Margin() < minMargin {
			margin += " (below " + fmt.Sprint(minMargin) + ")"
		}
		safetext.Fprintf(tw, "%s\t%d\t%s\t%d%s\t%d\t%s\t%s\n", d.KeyID, d.Generation, d.Created.Format(time.RFC3339),
			d.Objects, resourcesNote(d.Resources, d.From), d.Threshold, strings.Join(backends, " "), margin)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range r.DEKs {
		for _, s := range d.Shares {
			if !s.OK && s.Err != nil {
				safetext.Fprintf(w, "%s: %s: %v\n", d.KeyID, s.Backend, s.Err)
			}
		}
	}
	return nil
}

func resourcesNote(res map[string]int, from []string) string {
	var parts []string
	for name, n := range res {
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	sort.Strings(parts)
	for _, f := range from {
		if strings.HasPrefix(f, "state: ") {
			parts = append(parts, f)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

type drillJSON struct {
	Source       string         `json:"source,omitempty"`
	Custodians   bool           `json:"custodians"`
	MinMargin    int            `json:"minMargin"`
	ExitCode     int            `json:"exitCode"`
	NotTrousseau int            `json:"notTrousseau"`
	DEKs         []drillDEKJSON `json:"deks"`
}

type drillDEKJSON struct {
	KeyID      string            `json:"keyID,omitempty"`
	Generation uint32            `json:"generation"`
	Created    time.Time         `json:"created"`
	Threshold  int               `json:"threshold"`
	Objects    int               `json:"objects"`
	Resources  map[string]int    `json:"resources,omitempty"`
	From       []string          `json:"from"`
	Backends   map[string]string `json:"backends"` // name -> ok or the failure's kind
	Margin     int               `json:"margin"`
	Error      string            `json:"error,omitempty"`
	// Tampered: a header naming a DEK whose genuine header checked out,
	// but differing from it (an etcd writer's copy); not a custody failure.
	Tampered bool `json:"tampered,omitempty"`
	// Officers: its officers' branch, with --officer-packet.
	Officers *drillOfficers `json:"officers,omitempty"`
}

func writeDrillJSON(w io.Writer, r *recovery.DrillReport, minMargin int) error {
	out := drillJSON{Source: r.Describe, Custodians: custodiansDrilled(r), MinMargin: minMargin, ExitCode: r.ExitCode(minMargin), NotTrousseau: r.NotTrousseau, DEKs: []drillDEKJSON{}}
	for _, d := range r.DEKs {
		j := drillDEKJSON{KeyID: d.KeyID, Generation: d.Generation, Created: d.Created, Threshold: d.Threshold,
			Objects: d.Objects, Resources: d.Resources, From: d.From, Backends: map[string]string{}, Margin: d.Margin(), Tampered: d.Tampered,
			Officers: drillOfficersJSON(d.Officers)}
		if d.OfficersOnly {
			j.Margin = 0
		}
		for _, s := range d.Shares {
			j.Backends[s.Backend] = shareState(s.OK, s.Err)
		}
		if d.Err != nil {
			j.Error = d.Err.Error()
		}
		out.DEKs = append(out.DEKs, j)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(safetext.JSON(b), '\n'))
	return err
}

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
