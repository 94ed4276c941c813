package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// NewCmdOfficer builds `trousseau officer`: the break-glass ceremony
// (docs/recovery.md, "Break glass").
func NewCmdOfficer(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "officer",
		Short: "Break-glass officers: their age keys, the header signing key, their packet, and an officer's offline unwrap",
	}
	cmd.AddCommand(newCmdOfficerKeygen(s), newCmdOfficerSigningKey(s), newCmdOfficerPacket(s), newCmdOfficerUnwrap(s))
	return cmd
}

type officerKeygenOptions struct {
	streams
	pq  bool
	out string
}

func newCmdOfficerKeygen(s streams) *cobra.Command {
	o := &officerKeygenOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "keygen [--pq] [--out FILE]",
		Short: "Make an officer's age identity: X25519, or hybrid post-quantum (ML-KEM-768 + X25519) with --pq",
		Long: `Make an age identity for an officer, in age-keygen's format (age-keygen
and age-keygen -pq make the same files, and work wherever an identity is
read). Run it on the officer's own offline machine: the identity never
leaves it. The recipient (age1... or age1pq1...) goes in the config's
recovery.officers.

With --out, the identity is written to FILE (mode 0600, never over an
existing file) and the recipient printed on stdout. Without, the identity
goes to stdout and the recipient to stderr, as age-keygen does.

--pq makes a hybrid recipient, so backups sealed to it also resist a
future quantum computer (harvest now, decrypt later); it is about 2,000
characters long.

Exit status: 0 when the identity was made, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return o.run() },
	}
	cmd.Flags().BoolVar(&o.pq, "pq", false, "hybrid post-quantum identity (ML-KEM-768 + X25519, age1pq1...)")
	cmd.Flags().StringVar(&o.out, "out", "", "write the identity to `FILE` (0600) instead of stdout")
	return cmd
}

func (o *officerKeygenOptions) run() error {
	file, recipient, err := officers.NewIdentity(o.pq, time.Now())
	if err != nil {
		return err
	}
	defer clear(file)
	if o.out == "" {
		if _, err := o.Out.Write(file); err != nil {
			return err
		}
		fmt.Fprintf(o.Err, "Public key: %s\n", recipient)
		return nil
	}
	if err := officers.WriteFile(o.out, file, 0o600, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("--out %s exists: an identity file is never overwritten (it may be the only key to an officer's shares); choose another name", o.out)
		}
		return err
	}
	fmt.Fprintln(o.Out, recipient)
	return nil
}

type officerSigningKeyOptions struct {
	streams
	configFile string
	out        string
	force      bool
	timeout    time.Duration
}

func newCmdOfficerSigningKey(s streams) *cobra.Command {
	o := &officerSigningKeyOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "signing-key --config FILE --out FILE [--force]",
		Short: "Make the header signing key, wrapped k-of-n by the config's backends",
		Long: `Make the Ed25519 key that signs every DEK header once a recovery block is
configured, so that recovery through the officers can refuse headers an
etcd writer built from the officers' public recipients. Its private half
is split k-of-n over the config's backends like a DEK: every backend must
answer now, and k of them unlock it when serve starts.

FILE holds the wrapped key and its public half, no secret (mode 0644).
Copy it to every node, at the config's recovery.signingKeyFile, then make
the officers' packet (trousseau officer packet). It prints the public key
(base64) and its signer id (hex), as headers and the packet name it.

An existing FILE is replaced only with --force: that rotates the signing
key, and headers signed by the old key verify only with its public half,
which the next packet keeps when made with --previous OLD_PACKET.

Exit status: 0 when the file was written, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", "", "config `FILE` with the backends and threshold (the format of serve)")
	f.StringVar(&o.out, "out", "", "signing key `FILE` to write")
	f.BoolVar(&o.force, "force", false, "replace an existing FILE: rotates the signing key")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "deadline for every backend's wrap")
	cmd.MarkFlagRequired("config")
	cmd.MarkFlagRequired("out")
	return cmd
}

func (o *officerSigningKeyOptions) run(ctx context.Context) error {
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(o.out); err == nil && !o.force {
		return o.existsError()
	}
	key, err := makeSigningKey(ctx, cfg, o.timeout)
	if err != nil {
		return err
	}
	b, err := envelope.MarshalSigningKey(key)
	if err != nil {
		return err
	}
	if err := officers.WriteFile(o.out, b, 0o644, o.force); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return o.existsError()
		}
		return err
	}
	id := envelope.SignerID(key.Public)
	fmt.Fprintf(o.Out, "wrote %s\npublic key: %s\nsigner id: %s\n", o.out, base64.StdEncoding.EncodeToString(key.Public), hex.EncodeToString(id[:]))
	if abs, _ := filepath.Abs(o.out); cfg.Recovery == nil || cfg.Recovery.SigningKeyFile != abs {
		fmt.Fprintf(o.Err, "note: %s is not the config's recovery.signingKeyFile: copy it there, on every node\n", o.out)
	}
	return nil
}

func (o *officerSigningKeyOptions) existsError() error {
	return fmt.Errorf("--out %s exists: replacing it rotates the header signing key. Give --force to rotate; headers signed by the old key then verify only with its public key, so make the next packet with trousseau officer packet --previous OLD_PACKET", o.out)
}

// makeSigningKey wraps a new signing key with every backend of cfg.
func makeSigningKey(ctx context.Context, cfg *config.Config, timeout time.Duration) (*envelope.SigningKey, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backends, err := cfg.BuildBackends(ctx)
	if err != nil {
		return nil, err
	}
	defer kmsclients.CloseAll(backends)
	e, err := envelope.New(envelope.Config{Threshold: cfg.Threshold, Backends: backends})
	if err != nil {
		return nil, err
	}
	key, err := e.MakeSigningKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("make the signing key (every backend must answer): %w", err)
	}
	return key, nil
}

type officerPacketOptions struct {
	streams
	configFile string
	out        string
	previous   string
	text       bool
}

func newCmdOfficerPacket(s streams) *cobra.Command {
	o := &officerPacketOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "packet --config FILE --out FILE [--previous OLD_PACKET] [--text]",
		Short: "Write the officers' packet: the recovery policy, every recipient, the signing public keys and the procedure",
		Long: `Write what each officer keeps offline beside their identity: the
config's recovery threshold and officers (name, recipient, recipient id),
the header signing public key of recovery.signingKeyFile, and the
recovery procedure. It holds no secret. Recovery through the officers
checks each header's signature against the packet's keys.

After a change of officers or of signing key, give --previous with the
packet it replaces: its signing keys and policies are kept, so backups
made before the change still verify, and drill can name who holds their
shares. --text also prints the packet, readable, on stdout (to print on
paper).

Exit status: 0 when the packet was written, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return o.run() },
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", "", "config `FILE` with the recovery block")
	f.StringVar(&o.out, "out", "", "packet `FILE` to write (JSON); an existing one is replaced")
	f.StringVar(&o.previous, "previous", "", "the packet this one replaces (`OLD_PACKET`): its signing keys and policies are kept")
	f.BoolVar(&o.text, "text", false, "also print the packet, readable, on stdout")
	cmd.MarkFlagRequired("config")
	cmd.MarkFlagRequired("out")
	return cmd
}

func (o *officerPacketOptions) run() error {
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return err
	}
	var prev *officers.Packet
	if o.previous != "" {
		if prev, err = officers.ReadPacket(o.previous); err != nil {
			return fmt.Errorf("--previous: %w", err)
		}
	}
	p, err := officers.NewPacket(cfg, time.Now(), prev)
	if err != nil {
		return fmt.Errorf("%s: %w", o.configFile, err)
	}
	b, err := p.Marshal()
	if err != nil {
		return err
	}
	if err := officers.WriteFile(o.out, b, 0o644, true); err != nil {
		return err
	}
	if o.text {
		return p.WriteText(o.Out)
	}
	fmt.Fprintf(o.Out, "wrote %s: %d of %d officers, %d signing keys\n", o.out, p.Threshold, len(p.Officers), len(p.SigningKeys))
	// Recovery trusts every key listed: say which, so that a key slipped
	// into the --previous packet is seen.
	for i, k := range p.SigningKeys {
		from := "the config's signing key file"
		if i > 0 {
			from = "carried from " + o.previous
		}
		fmt.Fprintf(o.Out, "trusts signer id %s (%s)\n", k.SignerID, from)
	}
	return nil
}
