package grpcserver_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsv2 "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// benchServerEnv makes the test binary a server of BenchmarkDecryptCPUVsNoop
// instead of running tests: "trousseau" or "noop". Each server runs in a
// process of its own so that its CPU time is its own, not the client's.
const benchServerEnv = "TROUSSEAU_BENCH_SERVER"

// benchProfileEnv, if set, names a directory where each server of the CPU
// benchmark writes its CPU and allocation profiles, <role>.pprof and
// <role>.allocs.pprof, for `go tool pprof`.
const benchProfileEnv = "TROUSSEAU_BENCH_PROFILE_DIR"

func TestMain(m *testing.M) {
	if role := os.Getenv(benchServerEnv); role != "" {
		if err := serveForBench(role, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkDecryptCPUVsNoop drives Trousseau and a no-op KMS v2 server,
// each in its own process on a unix socket, with kube-apiserver's own
// client at 32 concurrent callers, in alternating rounds, and reports the
// CPU time each server process spent per warm Decrypt (getrusage) and
// the ratio (x-noop-cpu).
func BenchmarkDecryptCPUVsNoop(b *testing.B) {
	const callers = 32
	ctx := context.Background()
	seed := make([]byte, 32)
	rand.Read(seed)
	var sides []side
	for _, role := range []string{"trousseau", "noop"} {
		srv := startBenchServer(b, role)
		r, err := srv.svc.Encrypt(ctx, "u", seed)
		if err != nil {
			b.Fatal(err)
		}
		req := &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations}
		call := func() error { _, err := srv.svc.Decrypt(ctx, "u", req); return err }
		sides = append(sides, side{role + "-cpu", call, srv.cpu})
	}
	interleaveSides(b, callers, sides[0], sides[1], "noop-cpu")
}

// benchServer is a server process of the CPU benchmark, with
// kube-apiserver's client for it.
type benchServer struct {
	svc kmsservice.Service
	cpu func() time.Duration // the process's CPU time so far
}

// startBenchServer runs this test binary as the role's server and waits
// until it reports healthy.
func startBenchServer(b *testing.B, role string) *benchServer {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+role)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close() // the server exits, writing its profile, once its stdin closes
		if err := cmd.Wait(); err != nil {
			b.Errorf("%s server: %v\n%s", role, err, stderr.String())
		}
	})
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		b.Fatalf("%s server did not start: %s", role, stderr.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	svc, err := kmsv2client.NewGRPCService(ctx, lines.Text(), role, 3*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	s := &benchServer{svc: svc}
	s.cpu = func() time.Duration {
		if _, err := io.WriteString(in, "cpu\n"); err != nil || !lines.Scan() {
			b.Fatalf("%s server: no CPU time (%v): %s", role, err, stderr.String())
		}
		ns, err := strconv.ParseInt(lines.Text(), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return time.Duration(ns)
	}
	waitHealthy(b, svc, role)
	return s
}

func waitHealthy(b *testing.B, svc kmsservice.Service, role string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := svc.Status(context.Background())
		if err == nil && st.Healthz == "ok" {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s server not healthy: %v %+v", role, err, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveForBench serves role on a fresh socket, writes its endpoint to out,
// then answers each line read from in with the process's CPU time in
// nanoseconds, until in is closed.
func serveForBench(role string, in io.Reader, out io.Writer) error {
	dir, err := os.MkdirTemp("", "trscpu")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if pdir := os.Getenv(benchProfileEnv); pdir != "" {
		stop, err := profile(filepath.Join(pdir, role))
		if err != nil {
			return err
		}
		defer stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	socket := filepath.Join(dir, "run", "kms.sock")
	var stop func() error
	switch role {
	case "noop":
		stop, err = serveNoop(socket)
	case "trousseau":
		stop, err = serveTrousseau(ctx, dir, socket)
	default:
		err = fmt.Errorf("%s=%q: want trousseau or noop", benchServerEnv, role)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "unix://"+socket)
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		fmt.Fprintln(out, processCPU().Nanoseconds())
	}
	cancel()
	return stop()
}

// profile profiles the CPU until stop, which also writes the allocations.
func profile(prefix string) (stop func(), err error) {
	cpu, err := os.Create(prefix + ".pprof")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		if f, err := os.Create(prefix + ".allocs.pprof"); err == nil {
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}, nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func serveNoop(socket string) (func() error, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	kmsv2.RegisterKeyManagementServiceServer(srv, noop{})
	go srv.Serve(l)
	return func() error { srv.Stop(); return nil }, nil
}

// serveTrousseau runs the plugin as serve does (metrics on, JSON log at
// info), 2 of 3 key-file backends. The prober waits an hour between
// probes, so that only requests are measured.
func serveTrousseau(ctx context.Context, dir, socket string) (func() error, error) {
	var backends []kmsclients.Backend
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(dir, n+".key")
		if err := local.GenerateKeyFile(p); err != nil {
			return nil, err
		}
		be, err := local.New(ctx, "local-"+n, local.Config{KeyFile: p})
		if err != nil {
			return nil, err
		}
		backends = append(backends, be)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	m := grpcserver.NewMetrics()
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends, StateDir: filepath.Join(dir, "state"), Logger: log, Observer: m})
	if err != nil {
		return nil, err
	}
	p := grpcserver.NewPlugin(env, m, grpcserver.Options{Socket: socket, ProbeInterval: time.Hour, Logger: log})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		return nil, err
	}
	return func() error { return <-done }, nil
}
