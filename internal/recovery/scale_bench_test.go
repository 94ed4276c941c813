//go:build scalebench

package recovery

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
	"github.com/trousseau-io/trousseau/internal/safedir"
)

// BenchmarkScale runs the trousseau binary over snapshots of 100,000 and
// 1,000,000 Secrets (KMS v2, about 1 KB stored each; built once and
// cached in ~/.cache/trousseau/recovery-snapshots/<size>), in each mode
// once per iteration, and reports objects/s and the peak RssAnon read
// from /proc, each as a ratio to a plain read of the same snapshot in
// the same run: recover --dry-run with a provider name that matches
// nothing, which reads and parses every value and decrypts none.
// SCALE_SIZES picks sizes (default "100000,1000000"); SCALE_OUT_DIR, the
// file system --out-dir writes to (default the test's temporary
// directory), whose type and options are logged. make bench-scale.
func BenchmarkScale(b *testing.B) {
	out := scaleOutDir(b)
	bin := filepath.Join(b.TempDir(), "trousseau")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/trousseau").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	sizes := os.Getenv("SCALE_SIZES")
	if sizes == "" {
		sizes = "100000,1000000"
	}
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("SCALE_SIZES: %v", err)
		}
		dir := scaleSnapshot(b, n)
		snap, cfg := filepath.Join(dir, "snapshot.db"), filepath.Join(dir, "config.yaml")
		common := []string{"--etcd-snapshot", snap, "--config", cfg, "-q"}
		modes := []struct {
			name string
			args []string
		}{
			{"plain-read", append([]string{"recover", "--dry-run", "--provider-name", "none-such"}, common...)},
			{"dry-run", append([]string{"recover", "--dry-run"}, common...)},
			{"stream-yaml", append([]string{"recover", "-o", "yaml"}, common...)},
			{"out-dir", append([]string{"recover", "--out-dir", "OUTDIR"}, common...)},
			{"drill", append([]string{"drill"}, common...)},
		}
		b.Run(fmt.Sprintf("%d-secrets", n), func(b *testing.B) {
			var base scaleRun
			rates := map[string]float64{}
			for _, m := range modes {
				r := runScaled(b, bin, m.args, n, out)
				if m.name == "plain-read" {
					base = r
				}
				rates[m.name] = r.rate
				b.Logf("%-11s %8.0f objects/s (x%.2f plain read)  peak RssAnon %4d MB (x%.2f plain read)",
					m.name, r.rate, r.rate/base.rate, r.rss>>20, float64(r.rss)/float64(base.rss))
				b.ReportMetric(r.rate, m.name+"-objects/s")
				b.ReportMetric(float64(r.rss>>20), m.name+"-RssAnon-MB")
				b.ReportMetric(r.rate/base.rate, m.name+"-x-plain-rate")
			}
			files := filesAlone(b, n, out)
			// Both runs are CPU-bound on the same cores, so the directory
			// writer can at best take the stream's time plus the files'.
			floor := 1 / (1/rates["stream-yaml"] + 1/files)
			b.Logf("files alone %8.0f files/s: out-dir is x%.2f slower than the stream; the stream plus the files alone would be x%.2f; out-dir reaches %.0f%% of that",
				files, rates["stream-yaml"]/rates["out-dir"], rates["stream-yaml"]/floor, 100*rates["out-dir"]/floor)
			b.ReportMetric(files, "files-alone-files/s")
			b.ReportMetric(rates["stream-yaml"]/rates["out-dir"], "out-dir-x-slower-than-stream")
		})
	}
}

type scaleRun struct {
	rate float64 // objects/s
	rss  int64   // peak RssAnon, bytes
}

// filesAlone writes n files of the size of a recovered Secret's
// manifest through a [safedir.PrivateDir] per goroutine (as many as
// write at once in recover with its default workers), into 100
// namespaces, and nothing else: no snapshot, no decryption. It is the
// floor of the directory writer on out's file system, in files/s.
func filesAlone(b *testing.B, n int, out string) float64 {
	workers := min(2*runtime.NumCPU(), dirHandles)
	data := bytes.Repeat([]byte("x"), 979) // a scale Secret's YAML
	dir := filepath.Join(out, fmt.Sprintf("files-%d", n))
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		h, err := safedir.OpenPrivate(dir, os.Geteuid(), true)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer h.Close()
			for i := w; i < n; i += workers {
				if err := h.WriteFile(fmt.Sprintf("ns-%d/secrets/secret-%07d.yaml", i%100, i), data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	h, err := safedir.OpenPrivate(dir, os.Geteuid(), false)
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Sync(); err != nil {
		b.Fatal(err)
	}
	h.Close()
	return float64(n) / time.Since(start).Seconds()
}

// scaleOutDir makes the directory the runs' output directories go in.
// They are all removed at the end, not between runs: on ext4 without a
// journal, new files are slow to create for minutes after many were
// deleted (the allocator steps over each recently freed inode).
func scaleOutDir(b *testing.B) string {
	parent := os.Getenv("SCALE_OUT_DIR")
	if parent == "" {
		parent = b.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "bench-scale-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if fs, err := exec.Command("findmnt", "-no", "FSTYPE,OPTIONS", "-T", dir).Output(); err == nil {
		b.Logf("--out-dir writes to %s: %s", dir, bytes.TrimSpace(fs))
	}
	return dir
}

func runScaled(b *testing.B, bin string, args []string, n int, outParent string) scaleRun {
	args = append([]string(nil), args...)
	for i, a := range args {
		if a == "OUTDIR" {
			args[i] = filepath.Join(outParent, fmt.Sprintf("out-%d-%d", n, time.Now().UnixNano()))
		}
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = nil, &stderr // stdout: /dev/null
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var peak int64
	for tick := time.NewTicker(10 * time.Millisecond); ; <-tick.C {
		peak = max(peak, rssAnon(cmd.Process.Pid))
		select {
		case err := <-done:
			took := time.Since(start)
			if err != nil && args[0] != "drill" {
				b.Fatalf("%v: %v\n%s", args, err, stderr.String())
			}
			tick.Stop()
			return scaleRun{rate: float64(n) / took.Seconds(), rss: peak}
		default:
		}
	}
}

// rssAnon is the process's resident anonymous memory, 0 once it is gone.
func rssAnon(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// scaleSnapshot returns the cached directory of a snapshot of n Secrets,
// with the key files and config that decrypt it, building it once.
func scaleSnapshot(b *testing.B, n int) string {
	home, err := os.UserHomeDir()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(home, ".cache", "trousseau", "recovery-snapshots", strconv.Itoa(n))
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	s := newSealerIn(b, dir, true)
	snap, err := recoverytest.NewBoltSnapshot(filepath.Join(dir, "snapshot.db"))
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("secret-%07d", i)
		key := "/registry/secrets/" + ns + "/" + name
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "scale"}},
			Data: map[string][]byte{"username": []byte("user"), "password": []byte(fmt.Sprintf("password-%08d", i)), "ca.crt": bytes.Repeat([]byte("c"), 600)}}
		if err := snap.Put(key, sealV2(b, s, key, secret)); err != nil {
			b.Fatal(err)
		}
	}
	if err := snap.Close(); err != nil {
		b.Fatal(err)
	}
	cfg := fmt.Sprintf("stateDir: %s\nthreshold: 2\nbackends:\n", filepath.Join(dir, "no-state"))
	for _, name := range []string{"a", "b", "c"} {
		cfg += fmt.Sprintf("  - name: %s\n    local: {keyFile: %s}\n", name, filepath.Join(dir, name+".key"))
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o600); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a snapshot of %d Secrets in %s", n, time.Since(start).Round(time.Second))
	return dir
}
