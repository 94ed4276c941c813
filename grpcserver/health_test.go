package grpcserver_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/grpcserver"
)

// The health endpoint under abuse: what any process that reaches the port
// can make the plugin hold is bounded, and the gRPC socket is unaffected.

// connCounter counts the health endpoint's connections as its server
// holds them, from accept to close: open now, and the most open at once.
type connCounter struct {
	mu        sync.Mutex
	open, max int
}

func (c *connCounter) add(delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open += delta
	c.max = max(c.max, c.open)
}

func (c *connCounter) most() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

// startLimited starts a plugin whose health endpoint takes at most
// maxConns connections and cuts each after timeout.
func startLimited(t *testing.T, maxConns int, timeout time.Duration) (*harness, *connCounter) {
	h := newHarness(t)
	conns := &connCounter{}
	h.configure = func(p *grpcserver.Plugin) { grpcserver.SetHealthLimits(p, maxConns, timeout, conns.add) }
	h.start()
	return h, conns
}

// healthConn is a raw client connection to the health endpoint.
type healthConn struct {
	net.Conn
	r *bufio.Reader
}

func dialHealth(t *testing.T, h *harness) *healthConn {
	t.Helper()
	c, err := net.Dial("tcp", h.plugin.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &healthConn{c, bufio.NewReader(c)}
}

func (c *healthConn) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
}

const getLivez = "GET /livez HTTP/1.1\r\nHost: trousseau\r\n\r\n"

// status reads one response. The deadline only keeps a broken server
// from hanging the test.
func (c *healthConn) status(t *testing.T) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitClosed reads until the server closes the connection.
func (c *healthConn) waitClosed(t *testing.T) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := io.Copy(io.Discard, c.r)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the server keeps the connection open")
	}
}

// Connections over the cap are not taken while the cap's worth are open,
// and each is served in turn once the idle timeout frees a slot.
func TestHealthPortCapsConnections(t *testing.T) {
	const limit = 4
	// Long enough for all requests to be served at once without the cap.
	h, conns := startLimited(t, limit, 500*time.Millisecond)
	var clients []*healthConn
	for range 3 * limit {
		c := dialHealth(t, h)
		c.send(t, getLivez)
		clients = append(clients, c)
	}
	for i, c := range clients {
		if code := c.status(t); code != 200 {
			t.Fatalf("connection %d: %d", i, code)
		}
	}
	if n := conns.most(); n > limit {
		t.Fatalf("the server had %d connections open at once, the cap is %d", n, limit)
	}
	for _, c := range clients {
		c.waitClosed(t)
	}
}

func TestHealthPortClosesIdleConnections(t *testing.T) {
	h, _ := startLimited(t, grpcserver.HealthMaxConns, 200*time.Millisecond)
	c := dialHealth(t, h)
	c.send(t, getLivez)
	if code := c.status(t); code != 200 {
		t.Fatalf("/livez: %d", code)
	}
	c.waitClosed(t)
}

// A header that never ends is cut at the header timeout, however
// steadily it trickles in.
func TestHealthPortCutsSlowloris(t *testing.T) {
	h, _ := startLimited(t, grpcserver.HealthMaxConns, 200*time.Millisecond)
	c := dialHealth(t, h)
	c.send(t, "GET /livez HTTP/1.1\r\nHost: trousseau\r\n")
	go func() {
		for {
			if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	c.waitClosed(t)
}

func TestHealthPortRefusesOversizedHeaders(t *testing.T) {
	h := newHarness(t)
	h.start()
	for _, tc := range []struct {
		pad  int
		want int
	}{
		{grpcserver.HealthMaxHeaderBytes / 2, 200},
		{2 * grpcserver.HealthMaxHeaderBytes, http.StatusRequestHeaderFieldsTooLarge},
	} {
		c := dialHealth(t, h)
		c.send(t, "GET /livez HTTP/1.1\r\nHost: trousseau\r\nX-Pad: "+strings.Repeat("a", tc.pad)+"\r\n\r\n")
		if code := c.status(t); code != tc.want {
			t.Errorf("header of %d bytes: %d, want %d", tc.pad, code, tc.want)
		}
	}
}

// Idle and slowloris connections filling the health port do not keep the
// socket from answering, and the port serves again once the timeouts cut
// them.
func TestHealthFloodLeavesGRPCServing(t *testing.T) {
	const limit = 4
	h, conns := startLimited(t, limit, 200*time.Millisecond)
	for i := range 6 * limit {
		c := dialHealth(t, h)
		if i%2 == 0 {
			c.send(t, "GET /metrics HTTP/1.1\r\nHost: trousseau\r\n")
		}
	}
	c, _ := rawClient(t, h)
	r, seed := encrypt(t, c)
	if got, err := decrypt(t, c, r); err != nil || string(got) != string(seed) {
		t.Fatalf("decrypt during the flood: %v", err)
	}
	if code, _ := get(t, "http://"+h.plugin.HTTPAddr()+"/livez"); code != 200 {
		t.Fatalf("/livez after the flood: %d", code)
	}
	if n := conns.most(); n > limit {
		t.Fatalf("the server had %d connections open at once, the cap is %d", n, limit)
	}
}
