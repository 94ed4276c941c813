//go:build soak

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trousseau-io/trousseau/internal/soak"
	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// TestSoak is the chaos soak (make soak, docs/reliability.md): two
// control-plane nodes over one etcd, each a kube-apiserver and a
// Trousseau, 2 of 3 custodians (Vault transit, local-kms for AWS, a key
// file), load through both nodes and the faults of the seed's plan for
// SOAK_DURATION; then every promise is checked and reported in SOAK_OUT.
func TestSoak(t *testing.T) {
	dur, seed, out := soakSettings(t)
	plan := soak.NewPlan(seed, dur)
	writeJSON(t, filepath.Join(out, "plan.json"), plan)
	r := newSoakRig(t, seed, out)
	defer r.logFile.Close()
	r.logf("seed %d (plan %s), duration %s, output in %s", seed, plan.Digest(), dur, out)

	r.start = time.Now()
	r.rec = soak.NewRecorder(seed, r.start)
	r.rec.Update(func(rep *soak.Report) { rep.Plan = plan.Digest() })
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var load, lanes sync.WaitGroup
	r.startLoad(loadCtx, &load)
	for _, lane := range []string{soak.LaneCustodian, soak.LaneProcess, soak.LaneKey} {
		lanes.Go(func() { r.runLane(ctx, plan.Lanes[lane]) })
	}
	load.Go(func() { r.periodicChecks(loadCtx) })
	<-ctx.Done()
	r.logf("duration reached: the lanes finish their current fault")
	lanes.Wait()
	ran := time.Since(r.start)
	stopLoad()
	load.Wait()
	r.final()
	rep := r.rec.Finish(ran, time.Now())
	if err := plan.Ran(rep.Windows); err != nil {
		t.Errorf("the run did not follow seed %d's plan: %v", seed, err)
	}
	writeJSON(t, filepath.Join(out, "report.json"), rep)
	os.WriteFile(filepath.Join(out, "summary.txt"), []byte(rep.Summary()+"\n"), 0o644)
	r.logf("%s", rep.Summary())
	for _, c := range rep.Causes() {
		r.logf("failed requests, %s: %d", c, rep.FailedByCause[c])
	}
	for fault, n := range rep.FailedByFault {
		r.logf("failed requests explained by %s: %d", fault, n)
	}
	for _, p := range rep.Problems {
		t.Errorf("%s", p)
	}
	if !rep.Passed() {
		t.Errorf("soak failed: %s (replay with SOAK_SEED=%d; plan, fault log and report in %s)", rep.Summary(), seed, out)
	}
}

// soakSettings reads SOAK_DURATION (default 10m), SOAK_SEED (default the
// clock) and SOAK_OUT (default a new temp dir).
func soakSettings(t *testing.T) (time.Duration, int64, string) {
	dur := 10 * time.Minute
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION=%q: want a Go duration such as 10m or 1h", s)
		}
		dur = d
	}
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("SOAK_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: want an integer", s)
		}
		seed = n
	}
	out := os.Getenv("SOAK_OUT")
	if out == "" {
		out = filepath.Join(os.TempDir(), fmt.Sprintf("trousseau-soak-%d", seed))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatalf("SOAK_OUT: %v", err)
	}
	return dur, seed, out
}

func writeJSON(t *testing.T, path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// soakRig is everything the soak runs, and its records.
type soakRig struct {
	t       *testing.T
	out     string
	start   time.Time
	rec     *soak.Recorder
	hist    *soak.History
	vault   *soakVault
	aws     *testutil.Emulator
	keyFile string
	nodes   [2]*soakNode
	logMu   sync.Mutex
	logFile *os.File
}

// soakNode is one control-plane node. mu is held while its plugin or
// kube-apiserver process is replaced; kube is the client of the current
// kube-apiserver, which the load reads without waiting for a restart.
type soakNode struct {
	name   string
	c      *cluster
	mu     sync.Mutex
	starts int // plugin starts
	kube   atomic.Pointer[kubernetes.Clientset]
}

var soakAPIServer = apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"}

func newSoakRig(t *testing.T, seed int64, out string) *soakRig {
	r := &soakRig{t: t, out: out, hist: soak.NewHistory()}
	f, err := os.Create(filepath.Join(out, "soak.log"))
	if err != nil {
		t.Fatal(err)
	}
	r.logFile = f
	c1 := newCluster(t)
	c1.startEtcd()
	r.vault = startSoakVault(t, filepath.Join(c1.dir, "vault"))
	r.aws = testutil.StartLocalKMS(t)
	r.keyFile = filepath.Join(c1.dir, "keys", "keyfile.key")
	os.MkdirAll(filepath.Dir(r.keyFile), 0o700)
	if err := local.GenerateKeyFile(r.keyFile); err != nil {
		t.Fatal(err)
	}
	c2 := newCluster(t)
	c2.etcdURL, c2.etcdCli = c1.etcdURL, c1.etcdCli
	for i, c := range []*cluster{c1, c2} {
		n := &soakNode{name: []string{soak.Node1, soak.Node2}[i], c: c}
		r.writeSoakConfig(c)
		c.startPlugin()
		n.starts = 1
		c.startAPIServer(soakAPIServer)
		n.kube.Store(c.kube)
		r.nodes[i] = n
	}
	for _, ns := range []string{"soak-node1", "soak-node2", "soak-probe"} {
		_, err := c1.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// custodianBackends is the backends block of the plugin's config and of
// recover's, for the named custodians.
func (r *soakRig) custodianBackends(names ...string) string {
	blocks := map[string]string{
		soak.Vault:   fmt.Sprintf("  - name: vault\n    vault: {address: %q, keyName: trousseau, auth: {tokenFile: %s}}\n", r.vault.addr(), r.vault.tokenFile),
		soak.AWS:     fmt.Sprintf("  - name: aws\n    awskms: {keyID: %s, endpoint: %q}\n", testutil.AWSKey1ARN, r.aws.Endpoint()),
		soak.KeyFile: fmt.Sprintf("  - name: keyfile\n    local: {keyFile: %s}\n", r.keyFile),
	}
	var s string
	for _, n := range names {
		s += blocks[n]
	}
	return s
}

// awsEnv gives the plugin and recover credentials local-kms takes, and
// nothing of the machine's AWS setup.
func awsEnv(dir string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=AKIDTROUSSEAUSOAK", "AWS_SECRET_ACCESS_KEY=not-a-secret",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// writeSoakConfig is the 2-of-3 config every node shares, with the
// node's own socket, state dir and health address.
func (r *soakRig) writeSoakConfig(c *cluster) {
	c.pluginHC = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(r.t))
	c.pluginEnv = awsEnv(c.dir)
	cfg := fmt.Sprintf(`socket: %s
stateDir: %s
threshold: 2
backends:
%shealth: {listen: %s, probeInterval: 2s, probeTimeout: 2s}
log: {level: info, format: text}
`, c.socket, filepath.Join(c.dir, "state"), r.custodianBackends(soak.Custodians...), c.pluginHC)
	c.config = filepath.Join(c.dir, "trousseau.yaml")
	if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// logf writes a timestamped line to SOAK_OUT/soak.log and the test log.
func (r *soakRig) logf(format string, args ...any) {
	line := fmt.Sprintf("%s %s", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	if !r.start.IsZero() {
		line = fmt.Sprintf("%s +%.1fs %s", line[:12], time.Since(r.start).Seconds(), line[13:])
	}
	r.logMu.Lock()
	fmt.Fprintln(r.logFile, line)
	r.logMu.Unlock()
	r.t.Log(line)
}

func (r *soakRig) node(name string) *soakNode {
	if name == soak.Node1 {
		return r.nodes[0]
	}
	return r.nodes[1]
}
