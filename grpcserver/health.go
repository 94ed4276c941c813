package grpcserver

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Limits of the unauthenticated health endpoint, so a flood costs a fixed
// amount (docs/operations.md). Connections over HealthMaxConns wait in the
// accept backlog for free; closing them at once would cost CPU and fail
// probes that a moment's wait would pass.
const (
	HealthMaxConns = 32
	// HealthReadHeaderTimeout cuts a header that trickles in (slowloris).
	HealthReadHeaderTimeout = 5 * time.Second
	HealthReadTimeout       = 10 * time.Second
	HealthWriteTimeout      = 10 * time.Second
	// HealthIdleTimeout frees an idle keep-alive's slot; scrapers reconnect.
	HealthIdleTimeout = 10 * time.Second
	// HealthMaxHeaderBytes: 431 beyond it; probes send under 1 KiB.
	HealthMaxHeaderBytes = 8 << 10
	// HealthRequestInterval paces handlers, one start per interval, so
	// health requests take a bounded share of CPU from the gRPC socket.
	HealthRequestInterval = 20 * time.Millisecond
)

// healthLimits are the constants above, shortened by tests.
type healthLimits struct {
	maxConns                                                  int
	readHeaderTimeout, readTimeout, writeTimeout, idleTimeout time.Duration
	maxHeaderBytes                                            int
	requestInterval                                           time.Duration
	watch                                                     func(net.Listener) net.Listener // tests: counts connections
}

func defaultHealthLimits() healthLimits {
	return healthLimits{
		maxConns: HealthMaxConns, readHeaderTimeout: HealthReadHeaderTimeout, readTimeout: HealthReadTimeout,
		writeTimeout: HealthWriteTimeout, idleTimeout: HealthIdleTimeout, maxHeaderBytes: HealthMaxHeaderBytes,
		requestInterval: HealthRequestInterval,
	}
}

// server is an HTTP server of h within l.
func (l healthLimits) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           newPacer(l.requestInterval).wrap(h),
		ReadHeaderTimeout: l.readHeaderTimeout,
		ReadTimeout:       l.readTimeout,
		WriteTimeout:      l.writeTimeout,
		IdleTimeout:       l.idleTimeout,
		MaxHeaderBytes:    l.maxHeaderBytes,
	}
}

// listener takes at most l.maxConns connections of lis at once.
func (l healthLimits) listener(lis net.Listener) net.Listener {
	lis = netutil.LimitListener(lis, l.maxConns)
	if l.watch != nil {
		lis = l.watch(lis)
	}
	return lis
}

// pacer runs handlers one at a time, starts interval apart, holding
// nothing the gRPC path uses.
type pacer struct {
	turn     chan struct{} // holds a token while a handler runs
	interval time.Duration
	last     time.Time // last start; used with the token held
}

func newPacer(interval time.Duration) *pacer {
	return &pacer{turn: make(chan struct{}, 1), interval: interval}
}

func (p *pacer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case p.turn <- struct{}{}:
		case <-r.Context().Done():
			return // the client left while waiting
		}
		defer func() { <-p.turn }()
		time.Sleep(time.Until(p.last.Add(p.interval)))
		p.last = time.Now()
		h.ServeHTTP(w, r)
	})
}
