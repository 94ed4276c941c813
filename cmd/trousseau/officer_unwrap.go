package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
seal it again to the recovery operator's recipient (--to, age1... or
age1pq1..., made for this recovery with trousseau officer keygen). FILE
(mode 0600, never over an existing file) goes to the operator, who adds
it to trousseau recover with --officer-shares.

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
	// Each header is checked as it is met, and only those to unwrap are
	// kept whole: an etcd writer can store as many forged ones as etcd
	// holds.
	var checked []checkedHeader
	var accepted [][]byte
	sc, err := recovery.Headers(ctx, recovery.SnapshotFile{Path: o.snapshot}, o.prefix, func(raw []byte) {
		c, h := checkHeader(raw, trusted, o.packet != "")
		if h != nil && h.Recovery != nil && (o.acceptUnsigned || !c.refused()) {
			accepted = append(accepted, bytes.Clone(raw))
			c.officers = make([]string, len(h.Recovery.Shares))
			for i, s := range h.Recovery.Shares {
				c.officers[i] = s.Officer
			}
		}
		checked = append(checked, c)
	})
	if err != nil {
		return err
	}
	t, err := envelope.TransferShares("", accepted, ids, o.to)
	reportUnwrap(o.Err, checked, t, o.acceptUnsigned)
	if err != nil {
		return fmt.Errorf("%s (%s, %d headers): %w", o.snapshot, sc.Describe, len(checked), err)
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
	branch     bool     // it has an officers' branch
	officers   []string // share holders, by index: of accepted headers only
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
	c.keyID, c.generation, c.dekID, c.branch = h.KeyID(), h.Generation, hex.EncodeToString(h.DEKID[:]), h.Recovery != nil
	if check {
		c.sig = envelope.CheckSignature(raw, h, trusted)
	}
	return c, h
}

// refused: a header the packet's keys did not sign.
func (c checkedHeader) refused() bool {
	return c.checked && c.sig != envelope.SignatureValid
}

// reportLines bounds the lines about headers that are unreadable or
// refused: a snapshot may hold any number.
const reportLines = 20

// reportUnwrap says, per header, whether this officer's share opened.
func reportUnwrap(w io.Writer, checked []checkedHeader, t *envelope.ShareTransfer, acceptUnsigned bool) {
	opened := map[string][]int{} // share indexes, by DEK id (hex)
	if t != nil {
		for _, s := range t.Shares {
			opened[s.DEKID] = append(opened[s.DEKID], s.Index)
		}
	}
	var n, refused, noisy int
	for _, c := range checked {
		idx := opened[c.dekID]
		switch {
		case c.branch && len(idx) > 0:
			n++
		case c.branch && c.refused() && !acceptUnsigned:
			refused++
		}
		if c.keyID == "" || (c.refused() && !acceptUnsigned) {
			if noisy++; noisy > reportLines {
				continue
			}
		}
		if c.keyID == "" {
			safetext.Fprintf(w, "unwrap: unreadable header: %v\n", c.err)
			continue
		}
		safetext.Fprintf(w, "unwrap: DEK %s generation %d: signature: %s; %s\n", c.keyID, c.generation, c.signature(), c.verdict(idx, acceptUnsigned))
	}
	if noisy > reportLines {
		safetext.Fprintf(w, "unwrap: %d more unreadable or refused headers not listed\n", noisy-reportLines)
	}
	safetext.Fprintf(w, "unwrap: %d headers: %d opened, %d refused for their signature\n", len(checked), n, refused)
}

func (c checkedHeader) signature() string {
	if !c.checked {
		return "not checked"
	}
	return c.sig.String()
}

// verdict says what became of the header, whose shares idx opened.
func (c checkedHeader) verdict(idx []int, acceptUnsigned bool) string {
	switch {
	case !c.branch:
		return "no officers' branch (made without a recovery policy)"
	case c.refused() && !acceptUnsigned:
		return "refused (--accept-unsigned unwraps it)"
	case len(idx) == 0:
		return "no share these identities open"
	}
	names := make([]string, len(idx))
	for i, j := range idx {
		names[i] = c.officers[j-1]
	}
	return fmt.Sprintf("share of %s opened", strings.Join(names, ", "))
}
