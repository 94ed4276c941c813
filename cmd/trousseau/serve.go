package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmsplugin"
)

type serveOptions struct {
	streams
	configFile   string
	dev          bool
	socket       string
	stateDir     string
	healthListen string
	logLevel     string
	logFormat    string
}

// NewCmdServe builds `trousseau serve`.
func NewCmdServe(s streams) *cobra.Command {
	o := &serveOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "serve (--config FILE | --dev --socket PATH --state-dir DIR)",
		Short: "Run the KMS plugin",
		Long: `Run the KMS plugin on a unix socket for kube-apiserver.

With --config, the plugin runs with the backends of a config file.
With --dev, it runs on an embedded default: three local key-file backends
created in --state-dir (reused if present), threshold 2. The full config is
written to <state-dir>/config.yaml so the same setup can be re-run with
--config or handed to other commands.

SIGTERM and SIGINT shut down gracefully. 'trousseau rotate' rotates the
DEK, over an admin socket in the state dir (<stateDir>/admin.sock, mode
0600, for the plugin's user and root only). SIGHUP rotates too, and is
caught from the process's first milliseconds: one sent while the plugin
starts is a rotation request, done once it serves. (Every other command
ends on SIGHUP, as programs do.)

Logs go to stderr, in log.format at log.level; --log-format, --log-level
and $TROUSSEAU_LOG_LEVEL override the config. An error that stops serve
is its last log line.

Exit status: 0 after SIGTERM or SIGINT, 1 when it cannot start or stops
on an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.complete(cmd)
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (overrides $"+logLevelEnv+" and the config's log.level)")
	f.StringVar(&o.logFormat, "log-format", "", "json or text (overrides the config's log.format)")
	completeValues(cmd, "log-level", logLevels...)
	completeValues(cmd, "log-format", logFormats...)
	f.StringVar(&o.configFile, "config", "", "config file (YAML)")
	f.BoolVar(&o.dev, "dev", false, "run on an embedded default of three local key-file backends, 2 of 3")
	f.StringVar(&o.socket, "socket", "", "socket path (dev mode; overrides the config's)")
	f.StringVar(&o.stateDir, "state-dir", "", "state directory (dev mode; overrides the config's)")
	f.StringVar(&o.healthListen, "health-listen", "", "health and metrics address (overrides the config's)")
	return cmd
}

// logLevelEnv sets the log level where the command line cannot be
// changed easily (a static pod's manifest, a unit file's drop-in).
const logLevelEnv = "TROUSSEAU_LOG_LEVEL"

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"json", "text"}
)

// complete takes the log level from the environment when no flag gives it.
func (o *serveOptions) complete(cmd *cobra.Command) {
	if !cmd.Flags().Changed("log-level") {
		o.logLevel = os.Getenv(logLevelEnv)
	}
}

func (o *serveOptions) validate() error {
	switch {
	case o.logLevel != "" && !slices.Contains(logLevels, o.logLevel):
		return fmt.Errorf("log level %q (--log-level or $%s): want debug, info, warn or error", o.logLevel, logLevelEnv)
	case o.logFormat != "" && !slices.Contains(logFormats, o.logFormat):
		return fmt.Errorf("--log-format %q: want json or text", o.logFormat)
	case o.dev && o.configFile != "":
		return errors.New("--dev and --config are exclusive")
	case o.dev && (o.socket == "" || o.stateDir == ""):
		return errors.New("--dev needs --socket and --state-dir")
	case !o.dev && o.configFile == "":
		return errors.New("give --config FILE, or --dev --socket PATH --state-dir DIR")
	}
	return nil
}

func (o *serveOptions) loadConfig() (*config.Config, error) {
	if o.dev {
		cfg, err := setUpDev(o.Out, o.socket, o.stateDir, o.healthListen)
		if err == nil {
			o.overrideLog(cfg)
		}
		return cfg, err
	}
	// Flags override the file before validation, so that what is checked
	// is what serve will use.
	cfg, err := config.Load(o.configFile, o.override)
	if err != nil {
		return nil, err
	}
	if err := cfg.ValidateOnHost(); err != nil {
		return nil, fmt.Errorf("config %s: %w", o.configFile, err)
	}
	return cfg, nil
}

// override sets in cfg what the flags give instead of the config file.
func (o *serveOptions) override(cfg *config.Config) {
	if o.socket != "" {
		cfg.Socket = o.socket
	}
	if o.stateDir != "" {
		cfg.StateDir = o.stateDir
	}
	if o.healthListen != "" {
		cfg.Health.Listen = o.healthListen
	}
	o.overrideLog(cfg)
}

func (o *serveOptions) overrideLog(cfg *config.Config) {
	if o.logLevel != "" {
		cfg.Log.Level = o.logLevel
	}
	if o.logFormat != "" {
		cfg.Log.Format = o.logFormat
	}
}

func (o *serveOptions) run(parent context.Context) (err error) {
	// A SIGHUP during start-up must not end the process (Go's default):
	// it would crash-loop a static pod. The binary catches it from package
	// init (earlyhup, in o.HUP), tests from here; the prober later takes it
	// as a rotation request. SIGTERM and SIGINT cancel the start-up.
	hup := o.HUP
	if hup == nil {
		own := make(chan os.Signal, 1)
		signal.Notify(own, syscall.SIGHUP)
		defer signal.Stop(own)
		hup = own
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cfg, err := o.loadConfig()
	if err != nil {
		return o.fatal(nil, err)
	}
	log := newLogger(o.Err, cfg.Log)
	defer func() { err = o.fatal(log, err) }()
	// Only a config error stops here: a backend that is down or whose key
	// file is unusable is built, and reported by the prober.
	backends, err := cfg.BuildBackends(ctx)
	if err != nil {
		return err
	}
	defer kmsclients.CloseAll(backends)
	lock, err := envelope.LockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	plugin, err := newPlugin(cfg, backends, log)
	if err != nil {
		return err
	}
	go rotateOnHUP(ctx, hup, plugin, log)
	if stopAdmin, err := serveAdmin(cfg.StateDir, plugin.Prober(), log); err != nil {
		log.Warn("trousseau rotate cannot reach this plugin (SIGHUP still rotates)", "error", err)
	} else {
		defer stopAdmin()
	}
	// The envelope logs [envelope.AuthenticationGap] after the first probe,
	// once every backend's key type is known.
	log.Info("starting trousseau", "version", buildVersion(), "fips140", fipsmode.Mode(), "fips_module", fipsmode.Module(),
		"threshold", cfg.Threshold, "backends", len(backends), "socket", cfg.Socket, "state_dir", cfg.StateDir)
	for _, w := range processFIPSWarnings(cfg) {
		log.Warn(w)
	}
	return plugin.Run(ctx)
}

func newPlugin(cfg *config.Config, backends []kmsclients.Backend, log *slog.Logger) (*grpcserver.Plugin, error) {
	metrics := grpcserver.NewMetrics(grpcserver.WithVersion(buildVersion()))
	recovery, err := cfg.RecoveryPolicy()
	if err != nil {
		return nil, err
	}
	env, err := envelope.New(envelope.Config{
		Threshold: cfg.Threshold, MinThreshold: cfg.ThresholdFloor(), Backends: backends, StateDir: cfg.StateDir,
		MaxAge: cfg.MaxAge(), Logger: log, Observer: metrics, Recovery: recovery,
	})
	if err != nil {
		return nil, err
	}
	mode, _ := cfg.SocketMode()
	return grpcserver.NewPlugin(env, metrics, grpcserver.Options{
		Socket: cfg.Socket, SocketMode: mode, SocketGroup: cfg.SocketPermissions.Group,
		HealthListen: cfg.Health.Listen, ProbeInterval: cfg.Health.ProbeInterval.Duration,
		ProbeTimeout: cfg.Health.ProbeTimeout.Duration, Version: buildVersion(), Logger: log,
		// A custodian socket that is this one by another path (a bind
		// mount, a hard link) shows only once this one exists.
		CheckListening: func(socket string) error { return kmsplugin.CheckNotSelf(backends, socket) },
	}), nil
}

// rotateOnHUP turns each SIGHUP, including one queued during start-up,
// into a rotation request.
func rotateOnHUP(ctx context.Context, hup <-chan os.Signal, plugin *grpcserver.Plugin, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: DEK rotation requested")
			plugin.Prober().RequestRotation()
		}
	}
}

// fatal logs the error that stops serve, so that a JSON pipeline sees why
// a pod crash-loops (before the config is read, with a logger of
// --log-format if given), and returns a [loggedError]; without a logger it
// returns err for main to print.
func (o *serveOptions) fatal(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if log == nil && o.logFormat != "" {
		log = newLogger(o.Err, config.Log{Level: "error", Format: o.logFormat})
	}
	if log == nil {
		return err
	}
	log.Error("trousseau serve stopped", "error", err.Error())
	return &loggedError{err}
}

// loggedError is an error already written to the log: main exits 1
// without printing it again.
type loggedError struct{ error }

func (e *loggedError) Unwrap() error { return e.error }

// newLogger is the plugin's logger on w, at c's level and in c's format,
// with durations as "1.5ms", not JSON's bare nanoseconds.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationAsString}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func durationAsString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
