// Package recoverytest runs what recovery tests need for real: an etcd
// server (the binary hack/kube.sh builds), optionally behind mutual TLS,
// and a writer that stores objects the way kube-apiserver does, through
// its own KMS v2 and v1 transformers and gRPC clients talking to
// Trousseau's plugin on a unix socket. For tests only.
package recoverytest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// EtcdBinary finds the etcd binary: $TROUSSEAU_ETCD, else hack/kube.sh's
// cache. A missing binary fails the test (skips it under -short).
func EtcdBinary(t testing.TB) string { return testutil.Etcd.Binary(t) }

// Etcd is a running single-member etcd.
type Etcd struct {
	Endpoint string
	Client   *clientv3.Client
	// TLS files, set when started with TLS (client certificates required).
	CACert, Cert, Key string
	DataDir           string
	logs              *testutil.Buffer
}

// StartEtcd runs etcd on 127.0.0.1 random ports in a temporary directory
// until the test ends.
func StartEtcd(t testing.TB, withTLS bool) *Etcd {
	t.Helper()
	bin := EtcdBinary(t)
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		e, err := startEtcd(t, bin, dir, attempt, withTLS)
		if err == nil {
			return e
		}
		lastErr = err
	}
	t.Fatalf("etcd did not start: %v", lastErr)
	return nil
}

func startEtcd(t testing.TB, bin, dir string, attempt int, withTLS bool) (*Etcd, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	e := &Etcd{DataDir: filepath.Join(dir, fmt.Sprintf("data%d", attempt)), logs: &testutil.Buffer{}}
	args := []string{"--name", "recovery-test", "--data-dir", e.DataDir, "--log-level", "warn"}
	if withTLS {
		scheme = "https"
		ca, srv, cli := writeTLSFiles(t, filepath.Join(dir, "pki"))
		e.CACert, e.Cert, e.Key = ca, cli[0], cli[1]
		args = append(args, "--cert-file", srv[0], "--key-file", srv[1], "--trusted-ca-file", ca, "--client-cert-auth")
	}
	e.Endpoint = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	args = append(args,
		"--listen-client-urls", e.Endpoint, "--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "recovery-test="+peer,
	)
	cmd := exec.Command(bin, args...)
	// etcd is no part of the plugin: the FIPS pass's GODEBUG=fips140=only
	// is not its to run under.
	cmd.Env = append(os.Environ(), "GODEBUG=")
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, TLS: e.ClientTLS(t), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		stop()
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = cli.Get(ctx, "health-check")
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			cli.Close()
			return nil, fmt.Errorf("etcd exited: %v\n%s", werr, e.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			cli.Close()
			stop()
			return nil, fmt.Errorf("etcd not ready after 60s: %v\n%s", err, e.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.Client = cli
	t.Cleanup(func() {
		cli.Close()
		stop()
	})
	return e, nil
}

// ClientTLS is the client side of the TLS setup, nil without TLS.
func (e *Etcd) ClientTLS(t testing.TB) *tls.Config {
	if e.CACert == "" {
		return nil
	}
	cfg, err := transport.TLSInfo{CertFile: e.Cert, KeyFile: e.Key, TrustedCAFile: e.CACert}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Snapshot streams a snapshot (Maintenance.Snapshot, as `etcdctl
// snapshot save` does: the database followed by its SHA-256) to path.
func (e *Etcd) Snapshot(t testing.TB, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc, err := e.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		t.Fatalf("snapshot: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
