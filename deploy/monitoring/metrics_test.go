package monitoring

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pendingMetrics are used by a rule or panel but not exported by the
// binary yet, with their labels: a metric and its alert can be written
// before the metric lands. The test fails once the binary exports one, so
// that its entry is removed and its labels checked for real.
var pendingMetrics = map[string][]string{}

// prometheusMetrics are made by Prometheus itself, not scraped.
var prometheusMetrics = map[string][]string{"up": nil}

// targetLabels are added to every series when it is scraped: job and
// instance by Prometheus, cluster (optional) by the scrape config or
// external labels.
var targetLabels = []string{"job", "instance", "cluster"}

// TestRulesAndPanelsUseExportedMetrics scrapes a real `trousseau serve
// --dev`, with one of its three backends made unusable after the first DEK
// and after a few requests, so that every series it can have is there; and
// fails for any metric name or label that a rule (expression, annotation)
// or a dashboard panel (query, legend, variable) uses and that the
// binary does not export.
func TestRulesAndPanelsUseExportedMetrics(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("builds and runs the trousseau binary")
	}
	exported := scrapeDevPlugin(t)
	for name, labels := range pendingMetrics {
		if _, ok := exported[name]; ok {
			t.Errorf("%s is exported now: remove it from pendingMetrics", name)
		}
		exported[name] = set(labels...)
	}
	for name, labels := range prometheusMetrics {
		exported[name] = set(labels...)
	}
	for _, u := range uses(t) {
		for _, p := range problems(u, exported) {
			t.Error(p)
		}
	}
}

// use is one expression of a rule or panel, with the labels its templates
// (annotations, legend) name.
type use struct {
	where, expr string
	templates   []string
}

var (
	annotationLabelRE = regexp.MustCompile(`\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	legendLabelRE     = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

func uses(t *testing.T) []use {
	var out []use
	for _, a := range alerts(t) {
		u := use{where: "alert " + a.Alert, expr: a.Expr}
		for _, text := range a.Annotations {
			for _, m := range annotationLabelRE.FindAllStringSubmatch(text, -1) {
				u.templates = append(u.templates, m[1])
			}
		}
		out = append(out, u)
	}
	for _, r := range Rows {
		for _, p := range r.Panels {
			for _, q := range p.Queries {
				u := use{where: "panel " + p.Title, expr: q.Expr}
				for _, m := range legendLabelRE.FindAllStringSubmatch(q.Legend, -1) {
					u.templates = append(u.templates, m[1])
				}
				out = append(out, u)
			}
		}
	}
	for _, v := range variables() {
		if m := labelValuesRE.FindStringSubmatch(v.Definition); m != nil {
			out = append(out, use{where: "variable " + v.Name, expr: m[1], templates: []string{m[2]}})
		}
	}
	return out
}

// problems says what u uses that exported lacks: a metric, a label its
// selector matches on, or a grouping or template label that is neither a
// label of one of its metrics nor a target label.
func problems(u use, exported map[string]map[string]bool) []string {
	r, err := parsePromQL(u.expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", u.where, err)}
	}
	var out []string
	known := set(targetLabels...)
	for _, s := range r.selectors {
		labels, ok := exported[s.metric]
		if !ok {
			out = append(out, fmt.Sprintf("%s: %s is not a metric the binary exports", u.where, s.metric))
			continue
		}
		for _, l := range s.labels {
			if !labels[l] && !slices.Contains(targetLabels, l) {
				out = append(out, fmt.Sprintf("%s: %s has no label %s (it has %v)", u.where, s.metric, l, keys(labels)))
			}
		}
		for l := range labels {
			known[l] = true
		}
	}
	for _, l := range append(r.grouping, u.templates...) {
		if !known[l] {
			out = append(out, fmt.Sprintf("%s: label %s is not one of its metrics' (%v)", u.where, l, keys(known)))
		}
	}
	return out
}

func TestProblems(t *testing.T) {
	exported := map[string]map[string]bool{"a_total": set("backend"), "b": set("key_id_hash"), "up": nil}
	cases := []struct {
		u    use
		want int
	}{
		{use{expr: `sum by (backend, instance) (rate(a_total{backend="x", job="j"}[5m])) > b`, templates: []string{"key_id_hash", "cluster"}}, 0},
		{use{expr: `up{job="trousseau"} == 0`, templates: []string{"instance"}}, 0},
		{use{expr: `a_totl`}, 1},
		{use{expr: `a_total{key_id_hash="x"} + b`}, 1},
		{use{expr: `sum by (result) (a_total)`}, 1},
		{use{expr: `a_total`, templates: []string{"key_id_hash"}}, 1},
		{use{expr: `label_replace(a_total, "x", "$1", "backend", "(.*)")`}, 1},
	}
	for _, c := range cases {
		if got := problems(c.u, exported); len(got) != c.want {
			t.Errorf("%s %v: %q, want %d problems", c.u.expr, c.u.templates, got, c.want)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// scrapeDevPlugin runs `trousseau serve --dev`, makes an Encrypt, a
// Decrypt and a Status request, removes one backend's key file, probes
// again (SIGHUP) until /metrics shows that backend down, and returns
// every metric name (histograms' _bucket, _sum and _count) with its labels.
func scrapeDevPlugin(t *testing.T) map[string]map[string]bool {
	dir, err := os.MkdirTemp("", "trs-metrics") // short: a socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := buildTrousseau(t, dir)
	socket, health := filepath.Join(dir, "kms.sock"), freeAddr(t)
	var logs syncBuffer
	cmd := exec.Command(bin, "serve", "--dev", "--socket", socket, "--state-dir", filepath.Join(dir, "s"), "--health-listen", health)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	waitFor(t, &logs, "/readyz 200", func() bool { status, _ := get(health, "/readyz"); return status == http.StatusOK })
	sealed := runBinary(t, "seed", bin, "encrypt", "--socket", socket)
	runBinary(t, sealed, bin, "decrypt", "--socket", socket)
	runBinary(t, "", bin, "status", "--socket", socket)
	if err := os.Remove(filepath.Join(dir, "s", "keys", "local-c.key")); err != nil {
		t.Fatalf("the dev mode's key files moved? %v", err)
	}
	cmd.Process.Signal(syscall.SIGHUP) // a probe now (and a rotation it must postpone)
	var exposition string
	waitFor(t, &logs, "local-c down in /metrics", func() bool {
		_, exposition = get(health, "/metrics")
		return strings.Contains(exposition, `trousseau_backend_up{backend="local-c"} 0`)
	})
	return parseExposition(t, exposition)
}

func buildTrousseau(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "trousseau")
	build := exec.Command("go", "build", "-o", bin, "./cmd/trousseau")
	build.Dir = root(t)
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func runBinary(t *testing.T, stdin, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("trousseau %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls ok for up to two minutes (a busy CI machine), failing with
// the plugin's log.
func waitFor(t *testing.T, logs *syncBuffer, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !ok(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s; the plugin's log:\n%s", what, logs.String())
		}
	}
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+`)

// parseExposition reads Prometheus's text format: each sample's metric
// name and label names.
func parseExposition(t *testing.T, text string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample: %q", line)
		}
		labels := out[m[1]]
		if labels == nil {
			labels = map[string]bool{}
			out[m[1]] = labels
		}
		names, err := labelNames(m[2])
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		for _, n := range names {
			labels[n] = true
		}
	}
	return out
}

// labelNames reads `a="x",b="y\"z"`.
func labelNames(s string) ([]string, error) {
	var names []string
	for s != "" {
		name, rest, ok := strings.Cut(s, `="`)
		if !ok {
			return nil, fmt.Errorf("no value after %q", s)
		}
		names = append(names, strings.TrimPrefix(name, ","))
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' {
				i++
			}
		}
		if i >= len(rest) {
			return nil, fmt.Errorf("unclosed value of %s", name)
		}
		s = rest[i+1:]
	}
	return names, nil
}

// syncBuffer is the plugin's output, written by exec's copying goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
