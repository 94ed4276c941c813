package grpcserver

import (
	"net"
	"sync"
	"time"
)

// SetHealthLimits sets p's health endpoint, before Run, to take at most
// maxConns connections and cut each after timeout (header, read, write
// and idle), and to call watch with +1 for each connection it accepts and
// -1 when it closes one.
func SetHealthLimits(p *Plugin, maxConns int, timeout time.Duration, watch func(delta int)) {
	l := &p.health
	l.maxConns = maxConns
	l.readHeaderTimeout, l.readTimeout, l.writeTimeout, l.idleTimeout = timeout, timeout, timeout, timeout
	l.watch = func(lis net.Listener) net.Listener { return watchedListener{lis, watch} }
}

type watchedListener struct {
	net.Listener
	watch func(int)
}

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.watch(1)
	return &watchedConn{Conn: c, watch: l.watch}, nil
}

// watchedConn reports its close before it frees its slot of the cap.
type watchedConn struct {
	net.Conn
	once  sync.Once
	watch func(int)
}

func (c *watchedConn) Close() error {
	c.once.Do(func() { c.watch(-1) })
	return c.Conn.Close()
}
