package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/safetext"
	"github.com/trousseau-io/trousseau/kmsclients"
)

type recoverOptions struct {
	streams
	configFile    string
	snapshot      string
	endpoints     []string
	caCert        string
	cert, key     string
	user          string
	resources     []string
	namespace     string
	prefix        string
	provider      string
	outputDir     string
	format        string // -o
	outputFlag    string // --output: a format, or the deprecated --out-dir
	dryRun        bool
	unencrypted   bool
	keepOwners    bool
	skipIntegrity bool
	workers       int
	unwrapTimeout time.Duration
	probeTimeout  time.Duration
	quiet         bool
	officerFlags
}

// officerFlags are recovery through the officers' branch (recover) and
// its drill: docs/recovery.md, "Break glass".
type officerFlags struct {
	officerPacket  string
	officerIDs     []string
	officerShares  []string
	acceptUnsigned bool
}

// NewCmdRecover builds `trousseau recover`.
func NewCmdRecover(s streams) *cobra.Command {
	o := &recoverOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "recover (--config FILE | --officer-identity FILE... --officer-packet FILE) (--etcd-snapshot FILE | --etcd-endpoints URLS) (--out-dir DIR | -o yaml|json | --dry-run)",
		Short: "Disaster recovery: decrypt every KMS-encrypted object of an etcd snapshot (or a live etcd) with any quorum of backends",
		Long: `Read an etcd snapshot file (made by 'etcdctl snapshot save'; no etcd
needs to run) or a live etcd, decrypt every object that kube-apiserver
encrypted through a KMS provider, and write the objects as manifests
ready for 'kubectl apply'.

The backends come from --config (the format of 'serve'). Any set of them
that reaches each DEK's quorum is enough; backends that cannot be built
are skipped and reported. The threshold is read from the stored data,
not from the config.

Through the officers instead (break glass: no custodian at all): give
--officer-identity (repeatable) for the identities of k' officers, or
the operator's identity with the --officer-shares files officers made
with 'trousseau officer unwrap', and --officer-packet, whose signing keys
each header must be signed by: a header signed by another key, or not at
all, is refused (anyone with the officers' public recipients can build
one) and its objects fail, unless --accept-unsigned. No --config then.

Values are decrypted by kube-apiserver's own KMS v2 and v1 transformer
code. Server-managed metadata (resourceVersion, uid, creationTimestamp,
managedFields, ownerReferences, ...) is removed.

The objects go into --out-dir DIR (one file each), or to stdout with
-o yaml or -o json and no --out-dir (a YAML stream or a JSON List).

A summary says: objects found, decrypted, skipped, failed (by reason),
the DEKs met and the backends used (through the officers: each DEK's
signature status and the officers whose shares opened). With -o json it is a JSON object
(docs/reference/cli.md), on stdout when stdout holds no objects
(--out-dir, --dry-run), else on stderr; otherwise it is text on stderr.

Exit status: 0 when every object was recovered, 1 otherwise.

--output is the output format, as on every command: a directory given to
--output is still taken, with a warning, until the next release; use
--out-dir. --output json, yaml and text are never taken as a directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	o.addSourceFlags(f)
	f.StringSliceVar(&o.resources, "resources", nil, "resources to recover, as in etcd keys (secrets,configmaps; custom resources as plural.group); default: every KMS-encrypted resource")
	f.StringVarP(&o.namespace, "namespace", "n", "", "recover one namespace only")
	f.StringVar(&o.prefix, "prefix", recovery.DefaultPrefix, "kube-apiserver's --etcd-prefix")
	f.StringVar(&o.provider, "provider-name", "", "KMS provider name of the EncryptionConfiguration; default: any (k8s:enc:kms:v2:<name>: and k8s:enc:kms:v1:<name>:)")
	f.StringVar(&o.outputDir, "out-dir", "", "write one manifest per object to `DIR`/<namespace>/<resource>/<name>.yaml (0700 directories, 0600 files; DIR and what is in it must be yours, with no symlink)")
	o.addFormatFlags(cmd)
	f.BoolVar(&o.dryRun, "dry-run", false, "decrypt and decode everything, write nothing: count what could be recovered")
	f.BoolVar(&o.unencrypted, "include-unencrypted", false, "also write the selected objects stored unencrypted")
	f.BoolVar(&o.keepOwners, "keep-owner-references", false, "keep metadata.ownerReferences (they name the old cluster's UIDs)")
	f.BoolVar(&o.skipIntegrity, "skip-integrity-check", false, "read a snapshot whose checksum fails or that is truncated, salvaging what can be read")
	f.IntVar(&o.workers, "workers", 0, "objects decrypted in parallel (default: twice the CPUs); memory grows with it, by 16 objects in flight per worker, not with the snapshot")
	f.DurationVar(&o.unwrapTimeout, "unwrap-timeout", time.Minute, "deadline to unwrap one DEK from the backends")
	f.DurationVar(&o.probeTimeout, "probe-timeout", kmsclients.DefaultCommandProbeTimeout, "deadline for each backend's health probe at start")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress lines")
	o.addOfficerFlags(f, true)
	return cmd
}

// addOfficerFlags adds the officers' flags; recover also takes share
// transfers and --accept-unsigned.
func (o *officerFlags) addOfficerFlags(f *pflag.FlagSet, recover bool) {
	f.StringVar(&o.officerPacket, "officer-packet", "", "the officers' packet `FILE` (trousseau officer packet): its signing keys check every header, its officers name the shares")
	f.StringArrayVar(&o.officerIDs, "officer-identity", nil, "an officer's age identity `FILE` (repeatable); with --officer-shares, the operator's")
	if !recover {
		return
	}
	f.StringArrayVar(&o.officerShares, "officer-shares", nil, "a share transfer `FILE` made by trousseau officer unwrap, sealed to an identity of --officer-identity (repeatable)")
	f.BoolVar(&o.acceptUnsigned, "accept-unsigned", false, "through the officers, also open headers not signed by a key of the packet (reported per DEK); anyone with the officers' recipients can forge those")
}

// addSourceFlags adds the config and the etcd source flags that recover
// and drill share.
func (o *recoverOptions) addSourceFlags(f *pflag.FlagSet) {
	f.StringVar(&o.configFile, "config", "", "config `FILE` with the backends (the format of serve); not with --officer-identity")
	f.StringVar(&o.snapshot, "etcd-snapshot", "", "etcd snapshot `FILE` to read")
	f.StringSliceVar(&o.endpoints, "etcd-endpoints", nil, "live etcd to read instead (comma-separated `URLS`)")
	f.StringVar(&o.caCert, "cacert", "", "live etcd: CA bundle to verify the server")
	f.StringVar(&o.cert, "cert", "", "live etcd: client certificate")
	f.StringVar(&o.key, "key", "", "live etcd: client key")
	f.StringVar(&o.user, "user", "", "live etcd: `USER[:PASSWORD]` (without a password, $ETCDCTL_PASSWORD is used)")
}

func (o *recoverOptions) validate(cmd *cobra.Command) error {
	if err := o.validateOfficers(); err != nil {
		return err
	}
	switch {
	case o.snapshot == "" && len(o.endpoints) == 0:
		return errors.New("give --etcd-snapshot FILE or --etcd-endpoints URLS")
	case o.snapshot != "" && len(o.endpoints) > 0:
		return errors.New("--etcd-snapshot and --etcd-endpoints are exclusive")
	case o.snapshot != "" && (o.caCert != "" || o.cert != "" || o.key != "" || o.user != ""):
		return errors.New("--cacert, --cert, --key and --user are for --etcd-endpoints")
	case o.skipIntegrity && o.snapshot == "":
		return errors.New("--skip-integrity-check is for --etcd-snapshot")
	}
	if err := o.resolveOutput(cmd); err != nil {
		return err
	}
	switch {
	case o.outputDir == "" && o.format == "" && !o.dryRun:
		return errors.New("say where the objects go: --out-dir DIR, -o yaml|json (stdout), or --dry-run")
	case o.dryRun && o.outputDir != "":
		return errors.New("--dry-run writes nothing: drop --out-dir")
	}
	return nil
}

func (o *recoverOptions) validateOfficers() error {
	through := len(o.officerIDs) > 0
	switch {
	case through && o.configFile != "":
		return errors.New("--config and --officer-identity are exclusive: --config recovers through the custodians, --officer-identity through the officers alone")
	case !through && o.configFile == "":
		return errors.New("give --config FILE (recover through the custodians) or --officer-identity FILE with --officer-packet FILE (through the officers)")
	case !through && (o.officerPacket != "" || len(o.officerShares) > 0 || o.acceptUnsigned):
		return errors.New("--officer-packet, --officer-shares and --accept-unsigned are for recovery through the officers: give --officer-identity FILE (and no --config)")
	case through && o.officerPacket == "" && !o.acceptUnsigned:
		return errors.New("--officer-identity needs --officer-packet FILE: headers are checked against its signing keys (--accept-unsigned opens them unchecked, and anyone with the officers' public recipients can forge those)")
	}
	return nil
}

func (o *recoverOptions) source() recovery.Source {
	if o.snapshot != "" {
		return recovery.SnapshotFile{Path: o.snapshot, SkipIntegrityCheck: o.skipIntegrity}
	}
	user, pass, _ := strings.Cut(o.user, ":")
	if user != "" && pass == "" {
		pass = os.Getenv("ETCDCTL_PASSWORD")
	}
	return recovery.LiveEtcd{Endpoints: o.endpoints, CACert: o.caCert, Cert: o.cert, Key: o.key, Username: user, Password: pass}
}

func (o *recoverOptions) sink() (recovery.Sink, error) {
	if o.dryRun {
		return nil, nil
	}
	format := recovery.YAML
	if o.format == formatJSON {
		format = recovery.JSON
	}
	if o.outputDir != "" {
		return recovery.NewDirSink(o.outputDir, format)
	}
	return recovery.NewStreamSink(o.Out, format), nil
}

func (o *recoverOptions) run(ctx context.Context) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	env, closeEnv, err := o.recoveryEnvelope(ctx)
	if err != nil {
		return err
	}
	defer closeEnv()
	sink, err := o.sink()
	if err != nil {
		return err
	}
	opts := recovery.Options{
		Source: o.source(), Envelope: env, Prefix: o.prefix,
		Resources: o.resources, Namespace: o.namespace, Provider: o.provider,
		IncludeUnencrypted: o.unencrypted, KeepOwnerReferences: o.keepOwners,
		Sink: sink, Workers: o.workers, UnwrapTimeout: o.unwrapTimeout,
	}
	if !o.quiet {
		opts.Progress = o.Err
	}
	sum, err := recovery.Run(ctx, opts)
	if sum != nil {
		if werr := o.writeSummary(sum); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return safetext.Error(err)
	}
	return sum.Err()
}

// recoveryEnvelope is the custodians' keyring of --config, or the
// officers' of --officer-identity.
func (o *recoverOptions) recoveryEnvelope(ctx context.Context) (recovery.Envelope, func(), error) {
	if len(o.officerIDs) > 0 {
		quietKubeLogs()
		p, err := o.readPacket()
		if err != nil {
			return nil, nil, err
		}
		k, err := o.officerKeyring(p, o.acceptUnsigned)
		if err != nil {
			return nil, nil, err
		}
		return k, func() {}, nil
	}
	_, kr, err := o.openKeyring(ctx)
	if err != nil {
		return nil, nil, err
	}
	return kr, kr.Close, nil
}

// readPacket reads --officer-packet; nil without one.
func (o *officerFlags) readPacket() (*officers.Packet, error) {
	if o.officerPacket == "" {
		return nil, nil
	}
	p, err := officers.ReadPacket(o.officerPacket)
	if err != nil {
		return nil, fmt.Errorf("--officer-packet: %w", err)
	}
	return p, nil
}

// officerKeyring opens DEKs with the identities and transfers given,
// trusting the signing keys of the packet p (none without one).
func (o *officerFlags) officerKeyring(p *officers.Packet, acceptUnsigned bool) (*envelope.OfficerKeyring, error) {
	cfg := envelope.OfficerKeyringConfig{AcceptUnsigned: acceptUnsigned}
	if p != nil {
		cfg.Trusted = p.TrustedKeys()
	}
	for _, path := range o.officerIDs {
		ids, err := officers.ReadIdentities(path)
		if err != nil {
			return nil, fmt.Errorf("--officer-identity: %w", err)
		}
		cfg.Identities = append(cfg.Identities, ids...)
	}
	for _, path := range o.officerShares {
		t, err := officers.ReadTransfer(path)
		if err != nil {
			return nil, fmt.Errorf("--officer-shares: %w", err)
		}
		cfg.Transfers = append(cfg.Transfers, t)
	}
	return envelope.NewOfficerKeyring(cfg)
}

// openKeyring loads the config and opens a keyring over its backends:
// what recover and drill do first.
func (o *recoverOptions) openKeyring(ctx context.Context) (*config.Config, *recovery.Keyring, error) {
	quietKubeLogs()
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return nil, nil, err
	}
	kr, err := recovery.OpenKeyring(ctx, cfg, o.probeTimeout)
	return cfg, kr, err
}

// quietKubeLogs keeps kube-apiserver's transformer code from logging
// each failed object on stderr: the summary reports them, grouped.
func quietKubeLogs() { klog.SetLogger(logr.Discard()) }
