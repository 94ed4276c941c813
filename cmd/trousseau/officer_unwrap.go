package main

import (
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
	headers, sc, err := recovery.Headers(ctx, recovery.SnapshotFile{Path: o.snapshot}, o.prefix)
	if err != nil {
		return err
	}
	checked := checkHeaders(headers, trusted, o.packet != "")
	t, err := envelope.TransferShares("", acceptedHeaders(checked, o.acceptUnsigned), ids, o.to)
	reportUnwrap(o.Err, checked, t, o.acceptUnsigned)
	if err != nil {
		return fmt.Errorf("%s (%s, %d headers): %w", o.snapshot, sc.Describe, len(headers), err)
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

// checkedHeader is one stored header and how its signature checked.
type checkedHeader struct {
	raw     []byte
	h       *envelope.Header // nil if it does not parse
	err     error
	sig     envelope.Signature
	checked bool // against a packet's keys
}

func checkHeaders(headers [][]byte, trusted []ed25519.PublicKey, check bool) []checkedHeader {
	out := make([]checkedHeader, len(headers))
	for i, raw := range headers {
		c := checkedHeader{raw: raw, checked: check}
		if c.h, c.err = envelope.ParseHeader(raw); c.err == nil && check {
			c.sig = envelope.CheckSignature(raw, c.h, trusted)
		}
		out[i] = c
	}
	return out
}

// refused: a header the packet's keys did not sign.
func (c checkedHeader) refused() bool {
	return c.checked && c.sig != envelope.SignatureValid
}

func acceptedHeaders(checked []checkedHeader, acceptUnsigned bool) [][]byte {
	var out [][]byte
	for _, c := range checked {
		if c.h != nil && c.h.Recovery != nil && (acceptUnsigned || !c.refused()) {
			out = append(out, c.raw)
		}
	}
	return out
}

// reportUnwrap says, per header, whether this officer's share opened.
func reportUnwrap(w io.Writer, checked []checkedHeader, t *envelope.ShareTransfer, acceptUnsigned bool) {
	opened := map[string][]int{} // share indexes, by DEK id (hex)
	if t != nil {
		for _, s := range t.Shares {
			opened[s.DEKID] = append(opened[s.DEKID], s.Index)
		}
	}
	var n, refused int
	for _, c := range checked {
		if c.h == nil {
			safetext.Fprintf(w, "unwrap: unreadable header: %v\n", c.err)
			continue
		}
		idx := opened[hex.EncodeToString(c.h.DEKID[:])]
		if c.h.Recovery != nil && len(idx) > 0 {
			n++
		} else if c.h.Recovery != nil && c.refused() && !acceptUnsigned {
			refused++
		}
		safetext.Fprintf(w, "unwrap: DEK %s generation %d: signature: %s; %s\n", c.h.KeyID(), c.h.Generation, c.signature(), c.verdict(idx, acceptUnsigned))
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
	case c.h.Recovery == nil:
		return "no officers' branch (made without a recovery policy)"
	case c.refused() && !acceptUnsigned:
		return "refused (--accept-unsigned unwraps it)"
	case len(idx) == 0:
		return "no share these identities open"
	}
	names := make([]string, len(idx))
	for i, j := range idx {
		names[i] = c.h.Recovery.Shares[j-1].Officer
	}
	return fmt.Sprintf("share of %s opened", strings.Join(names, ", "))
}
