package recovery

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/trousseau-io/trousseau/envelope"
)

// Recovery and drills through the officers' branch (docs/recovery.md,
// "Break glass"): with an [envelope.OfficerKeyring] as the Envelope, Run
// reports each DEK's signature and the officers whose shares opened; a
// drill with [OfficerDrill] checks each header's branch against the
// officers' packet.

// officerReporter is an envelope that opens DEKs through the officers
// ([envelope.OfficerKeyring]) and says how each went.
type officerReporter interface {
	Report(ctx context.Context, header []byte) envelope.OfficerReport
}

var _ officerReporter = (*envelope.OfficerKeyring)(nil)

// OfficerError is a DEK the officers' branch could not open: a refused
// signature ([envelope.ErrRefusedSignature]), too few shares, no branch.
// Every object under its header fails with it.
type OfficerError struct{ Report envelope.OfficerReport }

func (e *OfficerError) Error() string { return e.Report.Err.Error() }
func (e *OfficerError) Unwrap() error { return e.Report.Err }

// SignatureName is a header signature's status for JSON: valid, unsigned,
// unknown-key or invalid.
func SignatureName(s envelope.Signature) string {
	switch s {
	case envelope.SignatureValid:
		return "valid"
	case envelope.SignatureNone:
		return "unsigned"
	case envelope.SignatureUnknown:
		return "unknown-key"
	}
	return "invalid"
}

// AcceptedUnsigned reports whether r's DEK was opened although its
// signature did not verify (--accept-unsigned).
func AcceptedUnsigned(r envelope.OfficerReport) bool {
	return r.Officers > 0 && r.Signature != envelope.SignatureValid && !errors.Is(r.Err, envelope.ErrRefusedSignature)
}

// describeOfficers is a DEK's line through the officers, for people.
func describeOfficers(r envelope.OfficerReport) string {
	if r.Officers == 0 {
		return "no officers' branch"
	}
	sig := "signature valid"
	switch {
	case AcceptedUnsigned(r):
		sig = fmt.Sprintf("signature %s: accepted by --accept-unsigned", r.Signature)
	case r.Signature != envelope.SignatureValid:
		sig = fmt.Sprintf("signature %s: refused", r.Signature)
	}
	opened := "none"
	if len(r.Opened) > 0 {
		opened = strings.Join(r.Opened, ",")
	}
	return fmt.Sprintf("officers %d of %d, opened %s, %s", r.Threshold, r.Officers, opened, sig)
}

// OfficerDrill is what a drill of the officers' branch checks against:
// the packet's signing keys and officers, and, to prove the branch, a
// keyring over some officers' identities.
type OfficerDrill struct {
	Trusted []ed25519.PublicKey
	// Holder names the packet's officer who holds a recipient, "" if the
	// packet does not know it.
	Holder func(recipientID [8]byte) string
	// Prover opens shares; nil drills with no identity (nothing proved).
	Prover *envelope.OfficerKeyring
}

// OfficerBranch is one header's officers' branch, as drilled.
type OfficerBranch struct {
	Present   bool // the header has an officers' branch
	Threshold int  // k'
	Shares    []OfficerShareCheck
	Signature envelope.Signature
	// Proof is set when identities were given: the shares they opened and,
	// if at least k' did, whether those combine to the DEK (Err nil).
	Proof *envelope.OfficerReport
}

// OfficerShareCheck is one officer's share of a header.
type OfficerShareCheck struct {
	Index       int
	Officer     string // as the header names them
	RecipientID string // hex
	Holder      string // the packet's officer with that recipient; "" unknown
	Opened      bool   // an identity given opened it
}

// Known counts the shares sealed to recipients the packet knows.
func (b *OfficerBranch) Known() int {
	n := 0
	for _, s := range b.Shares {
		if s.Holder != "" {
			n++
		}
	}
	return n
}

// Margin is the officers the packet knows minus k': how many more
// officers' identities may be lost.
func (b *OfficerBranch) Margin() int { return b.Known() - b.Threshold }

// Problem says why the branch fails the drill, "" if it does not. Fewer
// than k' shares opened is no failure: officers may drill one by one.
func (b *OfficerBranch) Problem() string {
	switch {
	case !b.Present:
		return "no officers' branch: only the custodians can open this DEK"
	case b.Signature != envelope.SignatureValid:
		return fmt.Sprintf("header signature %s: recovery through the officers refuses it", b.Signature)
	case b.Margin() < 0:
		return fmt.Sprintf("only %d shares are sealed to officers the packet knows, %d needed", b.Known(), b.Threshold)
	case b.Proof != nil && len(b.Proof.Opened) >= b.Threshold && b.Proof.Err != nil:
		return fmt.Sprintf("proof failed: %v", b.Proof.Err)
	}
	return ""
}

// checkOfficers drills raw's officers' branch: no backend is asked.
func checkOfficers(ctx context.Context, raw []byte, h *envelope.Header, o *OfficerDrill) *OfficerBranch {
	b := &OfficerBranch{}
	rs := h.Recovery
	if rs == nil {
		return b
	}
	b.Present, b.Threshold = true, rs.Threshold
	b.Signature = envelope.CheckSignature(raw, h, o.Trusted)
	var opened []string
	if o.Prover != nil {
		rep := o.Prover.Prove(ctx, raw)
		b.Proof, opened = &rep, rep.Opened
	}
	for _, s := range rs.Shares {
		c := OfficerShareCheck{Index: s.Index, Officer: s.Officer, RecipientID: hex.EncodeToString(s.RecipientID[:])}
		if o.Holder != nil {
			c.Holder = o.Holder(s.RecipientID)
		}
		for _, n := range opened {
			c.Opened = c.Opened || n == s.Officer
		}
		b.Shares = append(b.Shares, c)
	}
	return b
}
