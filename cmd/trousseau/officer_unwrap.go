package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/safetext"
)

type officerUnwrapOptions struct {
	streams
	identities     []string
	to             string
	snapshot       string
	prefix         string
	packet         string
	acceptUnsigned bool
	out            string
}

func newCmdOfficerUnwrap(s streams) *cobra.Command {
	o := &officerUnwrapOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "unwrap --identity FILE --to RECIPIENT --etcd-snapshot FILE (--officer-packet FILE | --accept-unsigned) --out FILE",
		Short: "An officer, offline: open their shares of every DEK of a snapshot and seal them to the recovery operator",
		Long: `For an officer on an air-gapped machine, so that no identity leaves its
officer: read every Trousseau DEK header of an etcd snapshot (no object
is decrypted), open this officer's share of each with --identity, and
seal the key that opens it to the recovery operator's recipient (--to,
age1... or age1pq1..., made for this recovery with trousseau officer
keygen). That key opens the share sealed in the header and nothing
else, so the operator uses only signed shares. FILE (mode 0600, never
over an existing file) goes to the operator, who adds it to trousseau
recover with --officer-shares.

Headers are checked against the signing public keys of --officer-packet:
one that is unsigned or wrongly signed is skipped, since anyone who
knows the officers' recipients can build one. --accept-unsigned unwraps
them anyway; use it only when you know why (a signing key rotated
without packet --previous, its public half lost). Each DEK is reported on stderr:
key_id, signature, and whether this officer's share opened.

Exit status: 0 when the transfer was written, 1 otherwise (no share
opened, or an unreadable input).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.identities, "identity", nil, "the officer's age identity `FILE` (age-keygen's format; repeatable)")
	f.StringVar(&o.to, "to", "", "the recovery operator's age `RECIPIENT`")
	f.StringVar(&o.snapshot, "etcd-snapshot", "", "etcd snapshot `FILE` to read")
	f.StringVar(&o.prefix, "prefix", recovery.DefaultPrefix, "kube-apiserver's --etcd-prefix")
	f.StringVar(&o.packet, "officer-packet", "", "the officers' packet `FILE`: headers must be signed by one of its keys")
	f.BoolVar(&o.acceptUnsigned, "accept-unsigned", false, "also unwrap headers whose signature does not verify (or with no packet, unchecked)")
	f.StringVar(&o.out, "out", "", "share transfer `FILE` to write")
	for _, name := range []string{"identity", "to", "etcd-snapshot", "out"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}

func (o *officerUnwrapOptions) validate() error {
	if o.packet == "" && !o.acceptUnsigned {
		return errors.New("give --officer-packet FILE to check each header's signature (or --accept-unsigned to unwrap headers unchecked)")
	}
	if _, err := envelope.ParseRecipient(o.to); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if _, err := os.Lstat(o.out); err == nil {
		return o.existsError()
	}
	return nil
}

func (o *officerUnwrapOptions) existsError() error {
	return fmt.Errorf("--out %s exists: a share transfer is never overwritten; choose another name", o.out)
}

func (o *officerUnwrapOptions) run(ctx context.Context) error {
	ids, err := readIdentities(o.identities)
	if err != nil {
		return err
	}
	var trusted []ed25519.PublicKey
	if o.packet != "" {
		p, err := officers.ReadPacket(o.packet)
		if err != nil {
			return err
		}
		trusted = p.TrustedKeys()
	}
	r := &unwrapReport{trusted: trusted, check: o.packet != "", acceptUnsigned: o.acceptUnsigned, seen: map[[32]byte]bool{}}
	sc, err := recovery.Headers(ctx, recovery.SnapshotFile{Path: o.snapshot}, o.prefix, r.add)
	if err != nil {
		return err
	}
	t, err := envelope.TransferShares("", r.raw, ids, o.to)
	r.write(o.Err, t)
	if err != nil {
		return fmt.Errorf("%s (%s, %d headers): %w", o.snapshot, sc.Describe, r.total, err)
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	if err := officers.WriteFile(o.out, append(b, '\n'), 0o600, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return o.existsError()
		}
		return err
	}
	safetext.Fprintf(o.Err, "unwrap: wrote %s: %d shares of officer %s, sealed to %.20s...\n", o.out, len(t.Shares), t.Officer, o.to)
	return nil
}

func readIdentities(files []string) ([]age.Identity, error) {
	var ids []age.Identity
	for _, f := range files {
		got, err := officers.ReadIdentities(f)
		if err != nil {
			return nil, fmt.Errorf("--identity: %w", err)
		}
		ids = append(ids, got...)
	}
	return ids, nil
}

// checkedHeader is what the report says of one stored header: how its
// signature checked, not the header.
type checkedHeader struct {
	keyID      string // empty if the header does not parse
	generation uint32
	dekID      string   // hex
	officers   []string // share holders, by index: of accepted headers only
	note       string   // why a header that parses is not unwrapped
	err        error
	sig        envelope.Signature
	checked    bool // against a packet's keys
}

// checkHeader parses raw and checks its signature (with check).
func checkHeader(raw []byte, trusted []ed25519.PublicKey, check bool) (checkedHeader, *envelope.Header) {
	c := checkedHeader{checked: check}
	h, err := envelope.ParseHeader(raw)
	if err != nil {
		c.err = err
		return c, nil
	}
	c.keyID, c.generation, c.dekID = h.KeyID(), h.Generation, hex.EncodeToString(h.DEKID[:])
	if check {
		c.sig = envelope.CheckSignature(raw, h, trusted)
	}
	return c, h
}

// refused: a header the packet's keys did not sign.
func (c checkedHeader) refused() bool {
	return c.checked && c.sig != envelope.SignatureValid
}

// line is the report's line on a header that parses.
func (c checkedHeader) line(w io.Writer, verdict string) {
	safetext.Fprintf(w, "unwrap: DEK %s generation %d: signature: %s; %s\n", c.keyID, c.generation, c.signature(), verdict)
}

func (c checkedHeader) signature() string {
	if !c.checked {
		return "not checked"
	}
	return c.sig.String()
}

// reportLines bounds the lines about headers not unwrapped: a snapshot
// may hold any number.
const reportLines = 20

// unwrapReport checks each header as the snapshot is read and keeps
// whole only the headers to unwrap, each once: an etcd writer can store
// as many forged headers as etcd holds, and copies of a genuine one
// that differ in the commitment, which only the DEK can check. Of the
// others it keeps counts and the first lines.
type unwrapReport struct {
	trusted        []ed25519.PublicKey
	check          bool // against a packet's keys
	acceptUnsigned bool

	raw      [][]byte          // the headers to unwrap
	accepted []checkedHeader   // what the report says of them
	seen     map[[32]byte]bool // accepted headers without their commitment
	others   []checkedHeader   // the first reportLines of the rest

	total, refused, noBranch, unreadable, copies int
}

// add is [recovery.Headers]' callback.
func (r *unwrapReport) add(raw []byte) {
	r.total++
	c, h := checkHeader(raw, r.trusted, r.check)
	switch {
	case h == nil:
		r.unreadable++
	case h.Recovery == nil:
		r.noBranch++
		c.note = "no officers' branch (made without a recovery policy)"
	case c.refused() && !r.acceptUnsigned:
		r.refused++
		c.note = "refused (--accept-unsigned unwraps it)"
	default:
		r.accept(raw, h, c)
		return
	}
	if len(r.others) < reportLines {
		r.others = append(r.others, c)
	}
}

func (r *unwrapReport) accept(raw []byte, h *envelope.Header, c checkedHeader) {
	sum := sha256.Sum256(envelope.WithoutCommitment(raw))
	if r.seen[sum] {
		r.copies++
		return
	}
	r.seen[sum] = true
	r.raw = append(r.raw, bytes.Clone(raw))
	for _, s := range h.Recovery.Shares {
		c.officers = append(c.officers, s.Officer)
	}
	r.accepted = append(r.accepted, c)
}

// write says, per header listed, whether this officer's share opened,
// and counts them all.
func (r *unwrapReport) write(w io.Writer, t *envelope.ShareTransfer) {
	opened := map[string][]int{} // distinct share indexes, by DEK id (hex)
	if t != nil {
		for _, s := range t.Shares {
			if !slices.Contains(opened[s.DEKID], s.Index) {
				opened[s.DEKID] = append(opened[s.DEKID], s.Index)
			}
		}
	}
	var n int
	for _, c := range r.accepted {
		v := c.opened(opened[c.dekID])
		if v != "" {
			n++
		} else {
			v = "no share these identities open"
		}
		c.line(w, v)
	}
	for _, c := range r.others {
		if c.keyID == "" {
			safetext.Fprintf(w, "unwrap: unreadable header: %v\n", c.err)
		} else {
			c.line(w, c.note)
		}
	}
	if more := r.total - r.copies - len(r.accepted) - len(r.others); more > 0 {
		safetext.Fprintf(w, "unwrap: %d more headers not listed (unreadable, refused, or without an officers' branch)\n", more)
	}
	safetext.Fprintf(w, "unwrap: %d headers: %d opened, %d refused for their signature, %d without an officers' branch, %d unreadable, %d copies of an opened one with another commitment (skipped)\n",
		r.total, n, r.refused, r.noBranch, r.unreadable, r.copies)
}

// opened names the officers whose shares, of those at indexes idx,
// opened; "" if none.
func (c checkedHeader) opened(idx []int) string {
	var names []string
	for _, j := range idx {
		if j >= 1 && j <= len(c.officers) {
			names = append(names, c.officers[j-1])
		}
	}
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("share of %s opened", strings.Join(names, ", "))
}
