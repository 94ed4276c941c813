package grpcserver

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Limits of the health endpoint (health.listen), which has no
// authentication: whatever reaches the port can hold at most
// HealthMaxConns connections, each for a bounded time, so that a flood
// costs the plugin a fixed amount of memory and file descriptors.
// Connections over the cap wait in the kernel's accept backlog, which
// costs the plugin nothing, and are served in turn as others close; a
// listener that accepted and closed them at once would spend the plugin's
// CPU on every attempt, and fail a probe that a moment's wait would pass.
const (
	HealthMaxConns = 32
	// HealthReadHeaderTimeout cuts a connection whose request header is
	// not complete in time, however slowly it trickles in (slowloris).
	HealthReadHeaderTimeout = 5 * time.Second
	HealthReadTimeout       = 10 * time.Second
	HealthWriteTimeout      = 10 * time.Second
	// HealthIdleTimeout closes a keep-alive connection that sends no next
	// request: a scraper reconnects, a flood lets go of its slots.
	HealthIdleTimeout = 10 * time.Second
	// HealthMaxHeaderBytes bounds a request's header (431 beyond it);
	// probes and scrapers send well under 1 KiB.
	HealthMaxHeaderBytes = 8 << 10
	// HealthRequestInterval paces the handlers: one at a time, at most
	// one start per interval, so that requests on every open connection
	// take a bounded share of a CPU from the gRPC socket; a probe waits at
	// most HealthMaxConns intervals.
	HealthRequestInterval = 20 * time.Millisecond
)

// healthLimits are the limits a Plugin's health endpoint runs with:
// the constants above, shortened by tests.
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

// pacer runs handlers one at a time, each starting at least interval
// after the one before. It holds nothing the gRPC path uses.
type pacer struct {
	turn     chan struct{} // holds a token while a handler runs
	interval time.Duration
	last     time.Time // when the last handler started; read and set with the token held
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
