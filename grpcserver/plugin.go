package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Options configures a Plugin.
type Options struct {
	Socket        string
	SocketMode    os.FileMode
	SocketGroup   string
	HealthListen  string // "" turns the HTTP endpoint off
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	Version       string // of the binary, reported by KMS v1's Version
	Logger        *slog.Logger
	// CheckListening, if set, runs once the socket listens, before it
	// serves; an error stops Run. serve runs kmsplugin.CheckNotSelf here,
	// which needs a listening socket.
	CheckListening func(socket string) error
	// Now is the clock of the prober and /readyz; nil is time.Now.
	Now func() time.Time
}

// Plugin is the running KMS plugin: socket, prober, health and metrics.
type Plugin struct {
	opts    Options
	env     *envelope.Envelope
	metrics *Metrics
	prober  *Prober
	log     *slog.Logger
	health  healthLimits

	mu         sync.Mutex
	socketAddr string
	httpAddr   string
	ready      chan struct{}
}

// NewPlugin assembles a plugin; m is env's Observer, or nil.
func NewPlugin(env *envelope.Envelope, m *Metrics, opts Options) *Plugin {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SocketMode == 0 {
		opts.SocketMode = 0o600
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = kmsclients.DefaultProbeInterval
	}
	if opts.ProbeTimeout <= 0 || opts.ProbeTimeout > opts.ProbeInterval {
		opts.ProbeTimeout = kmsclients.ProbeTimeoutFor(opts.ProbeInterval)
	}
	prober := NewProber(env, opts.ProbeInterval, opts.ProbeTimeout, opts.Logger, m)
	if opts.Now != nil {
		prober.now = opts.Now
	}
	return &Plugin{opts: opts, env: env, metrics: m, log: opts.Logger, prober: prober, health: defaultHealthLimits(), ready: make(chan struct{})}
}

// Prober gives access to health and rotation requests.
func (p *Plugin) Prober() *Prober { return p.prober }

// Ready is closed once the socket and the HTTP endpoint listen.
func (p *Plugin) Ready() <-chan struct{} { return p.ready }

// HTTPAddr is the address the health endpoint listens on (after Ready).
func (p *Plugin) HTTPAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.httpAddr
}

// Run serves until ctx ends, then lets in-flight requests finish
// (bounded), removes the socket and releases its lock. It fails at once
// if [ListenUnix] does.
func (p *Plugin) Run(ctx context.Context) error {
	lis, err := ListenUnix(p.opts.Socket, p.opts.SocketMode, p.opts.SocketGroup)
	if err != nil {
		return err
	}
	if p.opts.CheckListening != nil {
		if err := p.opts.CheckListening(p.opts.Socket); err != nil {
			lis.Close()
			return err
		}
	}
	var httpLis net.Listener
	if p.opts.HealthListen != "" {
		httpLis, err = net.Listen("tcp", p.opts.HealthListen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("health endpoint %s: %w", p.opts.HealthListen, err)
		}
		p.mu.Lock()
		p.httpAddr = httpLis.Addr().String()
		p.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	services := NewServices(p.env, p.prober.Snapshot, p.opts.Version, p.log)
	grpcSrv := NewGRPCServer(services, p.metrics)
	errc := make(chan error, 2)
	go func() { errc <- grpcSrv.Serve(lis) }()
	var httpSrv *http.Server
	if httpLis != nil {
		httpSrv = p.health.server(p.httpHandler())
		go func() { errc <- httpSrv.Serve(p.health.listener(httpLis)) }()
	}
	proberDone := make(chan struct{})
	go func() { p.prober.Run(ctx); close(proberDone) }()
	p.log.Info("serving", "socket", p.opts.Socket, "health", p.HTTPAddr(), "threshold", p.env.Threshold(), "backends", len(p.env.Backends()))
	close(p.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		runErr = fmt.Errorf("server stopped: %w", runErr)
	}
	p.log.Info("shutting down")
	cancel()
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		grpcSrv.Stop()
	}
	if httpSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		httpSrv.Shutdown(sctx)
		scancel()
	}
	<-proberDone
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

func (p *Plugin) httpHandler() http.Handler {
	mux := http.NewServeMux()
	// Apart from readiness: a restart fixes no lost backend, so no loop.
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// readyz: 200 when Status would say ok, else 503 and why; then the
	// current DEK and [Snapshot.Warnings]. Anyone can read it: names and
	// error kinds only, as in Status.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		s := p.prober.Snapshot()
		if s.Healthz != healthzOK {
			http.Error(w, s.Healthz, http.StatusServiceUnavailable)
		} else {
			fmt.Fprintln(w, "ok")
		}
		// Live, like Status's key_id.
		if c := p.env.CurrentInfo(); c.KeyID != "" {
			fmt.Fprintf(w, "current DEK: %s, generation %d, %s at %s\n", c.KeyID, c.Generation, c.Origin, c.Since.UTC().Format(time.RFC3339))
			if o := officerBranch(p.env.Current()); o != nil {
				fmt.Fprintf(w, "recovery branch: %s\n", o)
			}
		}
		for _, warning := range s.Warnings(p.prober.now()) {
			fmt.Fprintln(w, "warning: "+warning)
		}
	})
	if p.metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(p.metrics.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}
