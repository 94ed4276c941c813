package main

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
)

// recoverFormats are what recover writes objects as.
var recoverFormats = []string{formatYAML, formatJSON}

// addFormatFlags adds -o as the short form of a hidden --format, not of
// --output, which takes a directory for one more release: `-o xml` is
// refused, never made a directory.
func (o *recoverOptions) addFormatFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.format, "format", "o", "", "output format: yaml or json (short for --output)")
	f.MarkHidden("format")
	f.StringVar(&o.outputFlag, "output", "", "output `FORMAT` of the objects and the summary: yaml or json (-o); a directory here is deprecated: use --out-dir")
	completeValues(cmd, "format", recoverFormats...)
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(recoverFormats, cobra.ShellCompDirectiveNoFileComp))
}

// resolveOutput sets o.format from -o or --output, and takes a --output
// that names no format as the deprecated --out-dir, with a warning.
func (o *recoverOptions) resolveOutput(cmd *cobra.Command) error {
	if o.format != "" && !slices.Contains(recoverFormats, o.format) {
		return fmt.Errorf("output format %q: want yaml or json", o.format)
	}
	v := o.outputFlag
	switch {
	case v == "":
		return nil
	case v == formatText:
		return errors.New("--output text: recover writes objects as yaml or json (its summary is text unless -o json); to write into a directory named text, say --out-dir text")
	case slices.Contains(recoverFormats, v):
		if o.format != "" && o.format != v {
			return fmt.Errorf("-o %s and --output %s disagree: give one", o.format, v)
		}
		o.format = v
		return nil
	case o.outputDir != "":
		return fmt.Errorf("--output %s and --out-dir %s: --output is the output format; give the directory with --out-dir only", v, o.outputDir)
	}
	fmt.Fprintf(o.Err, "warning: --output DIR is deprecated and goes in the next release: use --out-dir %s (--output is the output format, as on every command)\n", v)
	o.outputDir = v
	return nil
}

// writeSummary writes the summary: JSON with -o json (on stdout when
// stdout holds no objects), else text on stderr.
func (o *recoverOptions) writeSummary(sum *recovery.Summary) error {
	if o.format != formatJSON {
		_, err := sum.WriteTo(o.Err)
		return err
	}
	w := o.Err
	if o.dryRun || o.outputDir != "" {
		w = o.Out
	}
	return writeJSON(w, recoverSummaryJSON(sum))
}

// recoverSummary is recover's -o json summary (docs/reference/cli.md).
type recoverSummary struct {
	Source           string           `json:"source"`
	Revision         int64            `json:"revision"`
	DryRun           bool             `json:"dryRun"`
	Damaged          bool             `json:"damaged"`
	Warnings         []string         `json:"warnings"`
	Found            int              `json:"found"`
	Decrypted        int              `json:"decrypted"`
	Unencrypted      int              `json:"unencrypted"`
	NotEncrypted     int              `json:"notEncrypted"`
	OtherProvider    int              `json:"otherProvider"`
	Failed           int              `json:"failed"`
	Reasons          []recoverReason  `json:"reasons"`
	DEKs             []recoverDEK     `json:"deks"`
	Backends         []recoverBackend `json:"backends"`
	TookSeconds      float64          `json:"tookSeconds"`
	ObjectsPerSecond float64          `json:"objectsPerSecond"`
	ExitCode         int              `json:"exitCode"`
	Error            string           `json:"error,omitempty"`
}

type recoverReason struct {
	Text     string   `json:"text"`
	Count    int      `json:"count"`
	Examples []string `json:"examples"`
}

type recoverDEK struct {
	KeyID     string   `json:"keyID"`
	Threshold int      `json:"threshold"`
	Backends  []string `json:"backends"`
	Recovered bool     `json:"recovered"`
	Error     string   `json:"error,omitempty"`
	// Officers: how it did through the officers (--officer-identity).
	Officers *recoverOfficers `json:"officers,omitempty"`
}

type recoverOfficers struct {
	Branch           bool     `json:"branch"`
	Threshold        int      `json:"threshold"`
	Officers         int      `json:"officers"`
	Signature        string   `json:"signature,omitempty"`
	AcceptedUnsigned bool     `json:"acceptedUnsigned"`
	Opened           []string `json:"opened"`
}

func recoverOfficersJSON(r *envelope.OfficerReport) *recoverOfficers {
	if r == nil {
		return nil
	}
	j := &recoverOfficers{Branch: r.Officers > 0, Threshold: r.Threshold, Officers: r.Officers,
		AcceptedUnsigned: recovery.AcceptedUnsigned(*r), Opened: append([]string{}, r.Opened...)}
	if j.Branch {
		j.Signature = recovery.SignatureName(r.Signature)
	}
	return j
}

type recoverBackend struct {
	Name             string `json:"name"`
	Skipped          string `json:"skipped,omitempty"`    // why it could not be built
	ProbeError       string `json:"probeError,omitempty"` // its probe at start
	KeyIdentity      string `json:"keyIdentity,omitempty"`
	Unwraps          int64  `json:"unwraps"`
	UnwrapFailures   int64  `json:"unwrapFailures"`
	UnwrapsNotNeeded int64  `json:"unwrapsNotNeeded"` // cancelled: k others answered first
}

func recoverSummaryJSON(s *recovery.Summary) recoverSummary {
	j := recoverSummary{Source: s.Source, Revision: s.Revision, DryRun: s.DryRun, Damaged: s.Damaged,
		Warnings: append([]string{}, s.Warnings...), Found: s.Found, Decrypted: s.Decrypted, Unencrypted: s.Unencrypted,
		NotEncrypted: s.NotEncrypted, OtherProvider: s.OtherProvider, Failed: s.Failed,
		Reasons: []recoverReason{}, DEKs: []recoverDEK{}, Backends: []recoverBackend{},
		TookSeconds: s.Took.Seconds(), ObjectsPerSecond: s.Rate()}
	for _, r := range s.Reasons {
		j.Reasons = append(j.Reasons, recoverReason{Text: r.Text, Count: r.Count, Examples: r.Examples})
	}
	for _, d := range s.DEKs {
		dj := recoverDEK{KeyID: d.KeyID, Threshold: d.Threshold, Backends: d.Backends, Recovered: d.Err == nil, Officers: recoverOfficersJSON(d.Officers)}
		dj.Error = errText(d.Err)
		j.DEKs = append(j.DEKs, dj)
	}
	for _, b := range s.Backends {
		j.Backends = append(j.Backends, recoverBackend{Name: b.Name, Skipped: errText(b.Err), ProbeError: errText(b.ProbeErr),
			KeyIdentity: b.KeyIdentity, Unwraps: b.Unwraps, UnwrapFailures: b.UnwrapFailures, UnwrapsNotNeeded: b.UnwrapsCancelled})
	}
	if err := s.Err(); err != nil {
		j.ExitCode, j.Error = 1, err.Error()
	}
	return j
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
