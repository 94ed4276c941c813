package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/safetext"
)

// custodiansDrilled: the drill asked the custodians (it had --config).
func custodiansDrilled(r *recovery.DrillReport) bool {
	return !slices.ContainsFunc(r.DEKs, func(d recovery.DrilledDEK) bool { return d.OfficersOnly })
}

// writeOfficersTable writes the officers' branch of each DEK, then why
// any fails the drill; nothing without --officer-packet.
func writeOfficersTable(w io.Writer, r *recovery.DrillReport) error {
	if !slices.ContainsFunc(r.DEKs, func(d recovery.DrilledDEK) bool { return d.Officers != nil || d.OfficersOnly }) {
		return nil
	}
	fmt.Fprintln(w, "officers' branch:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tGEN\tOBJECTS\tK'\tOFFICERS\tSIGNATURE\tMARGIN\tPROOF")
	for _, d := range r.DEKs {
		b := d.Officers
		switch {
		case b == nil:
			safetext.Fprintf(tw, "%s\t-\t%d\t-\tunusable header: %v\t-\t-\t-\n", cmp.Or(d.KeyID, "-"), d.Objects, d.Err)
		case !b.Present:
			safetext.Fprintf(tw, "%s\t%d\t%d\t-\tNO OFFICERS' BRANCH\t-\t-\t-\n", d.KeyID, d.Generation, d.Objects)
		default:
			safetext.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\n", d.KeyID, d.Generation, d.Objects, b.Threshold,
				officerShares(b), recovery.SignatureName(b.Signature), b.Margin(), proofState(b))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range r.DEKs {
		if d.Officers == nil {
			continue
		}
		if p := d.Officers.Problem(); p != "" {
			safetext.Fprintf(w, "%s: officers: %s\n", d.KeyID, p)
		}
		if pr := d.Officers.Proof; pr != nil && pr.Err != nil && d.Officers.Problem() == "" && len(pr.Opened) > 0 {
			safetext.Fprintf(w, "%s: officers: proof not complete: %v\n", d.KeyID, pr.Err)
		}
	}
	return nil
}

// officerShares names who holds each share: the packet's officer, or
// UNKNOWN with the header's name and the recipient id; =opened or =sealed
// when identities were given.
func officerShares(b *recovery.OfficerBranch) string {
	parts := make([]string, 0, len(b.Shares))
	for _, s := range b.Shares {
		name := s.Holder
		if name == "" {
			name = "UNKNOWN(" + s.Officer + "," + s.RecipientID + ")"
		}
		if b.Proof != nil {
			name += map[bool]string{true: "=opened", false: "=sealed"}[s.Opened]
		}
		parts = append(parts, name)
	}
	return strings.Join(parts, " ")
}

// proofState is - with no identity, then proved, refused (the
// signature), FAILED (k' shares that do not combine) or opened n of k'.
func proofState(b *recovery.OfficerBranch) string {
	switch pr := b.Proof; {
	case pr == nil:
		return "-"
	case pr.Err == nil:
		return "proved"
	case errors.Is(pr.Err, envelope.ErrRefusedSignature):
		return "refused"
	case len(pr.Opened) >= b.Threshold:
		return "FAILED"
	}
	return fmt.Sprintf("opened %d of %d", len(b.Proof.Opened), b.Threshold)
}

// drillOfficers is a DEK's officers' branch in drill's -o json.
type drillOfficers struct {
	Branch     bool                `json:"branch"`
	Threshold  int                 `json:"threshold"`
	Officers   int                 `json:"officers"`
	Signature  string              `json:"signature,omitempty"`
	Shares     []drillOfficerShare `json:"shares"`
	Margin     int                 `json:"margin"`
	Proof      string              `json:"proof,omitempty"`
	Opened     []string            `json:"opened,omitempty"`
	ProofError string              `json:"proofError,omitempty"`
	Problem    string              `json:"problem,omitempty"`
}

type drillOfficerShare struct {
	Index       int    `json:"index"`
	Officer     string `json:"officer"`
	RecipientID string `json:"recipientID"`
	Holder      string `json:"holder,omitempty"`
	Opened      bool   `json:"opened"`
}

func drillOfficersJSON(b *recovery.OfficerBranch) *drillOfficers {
	if b == nil {
		return nil
	}
	j := &drillOfficers{Branch: b.Present, Threshold: b.Threshold, Officers: len(b.Shares), Shares: []drillOfficerShare{}, Problem: b.Problem()}
	if !b.Present {
		return j
	}
	j.Signature, j.Margin = recovery.SignatureName(b.Signature), b.Margin()
	for _, s := range b.Shares {
		j.Shares = append(j.Shares, drillOfficerShare{Index: s.Index, Officer: s.Officer, RecipientID: s.RecipientID, Holder: s.Holder, Opened: s.Opened})
	}
	if pr := b.Proof; pr != nil {
		j.Proof = strings.ToLower(proofState(b))
		if strings.HasPrefix(j.Proof, "opened") {
			j.Proof = "partial"
		}
		j.Opened = append([]string{}, pr.Opened...)
		j.ProofError = errText(pr.Err)
	}
	return j
}
