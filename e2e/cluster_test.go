package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// cluster is etcd, Trousseau and kube-apiserver on 127.0.0.1, each a real
// process with random ports and temp dirs.
type cluster struct {
	t   *testing.T
	dir string

	etcd     *proc
	etcdURL  string
	etcdCli  *clientv3.Client
	plugin   *proc
	pluginHC string // Trousseau's health address
	socket   string
	config   string
	keys     []string
	// pluginEnv is added to the plugin's environment (GODEBUG=fips140=only).
	pluginEnv []string

	apiserver *proc
	kube      *kubernetes.Clientset
	rest      *rest.Config
}

var trousseauBin string

// TestMain builds the plugin once for the whole suite.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trs-e2e-bin")
	if err != nil {
		panic(err)
	}
	if trousseauBin, err = testutil.BuildTrousseau(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newCluster(t *testing.T) *cluster {
	if testing.Short() {
		// Skipped here rather than at the first server looked up, whose
		// message would name that server alone.
		t.Skipf("needs the etcd and kube-apiserver servers: run %s and %s (./hack/test.sh builds every server), then test without -short", testutil.Etcd.Script, testutil.KubeAPIServer.Script)
	}
	// Short: the socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "trs-e2e")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, socket: filepath.Join(dir, "run", "kms.sock")}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []*proc{c.apiserver, c.plugin, c.etcd} {
				if p != nil {
					t.Logf("---- last lines of %s (%s):\n%s", p.name, p.logPath, p.tail(40))
				}
			}
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	return c
}

func (c *cluster) startEtcd() {
	t := c.t
	bin := testutil.Etcd.Binary(t)
	client, peer := testutil.FreePort(t), testutil.FreePort(t)
	c.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.etcd = startProc(t, c.dir, "etcd", bin,
		"--name", "e2e", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e="+peerURL, "--log-level", "warn")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcdURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c.etcdCli = cli
	eventually(t, 60*time.Second, "etcd answers", func(ctx context.Context) error {
		_, err := cli.Get(ctx, "health")
		return err
	})
	t.Log("etcd up at", c.etcdURL)
}

// writePluginConfig makes three key files and a 2-of-3 config.
func (c *cluster) writePluginConfig() {
	t := c.t
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(c.dir, "keys", n+".key")
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		c.keys = append(c.keys, p)
	}
	c.writeConfigFile()
}

// writeConfigFile writes a 2-of-3 config over c.keys, with a socket, state
// dir and health address of c's own.
func (c *cluster) writeConfigFile() {
	t := c.t
	var backends strings.Builder
	for i, p := range c.keys {
		fmt.Fprintf(&backends, "  - name: local-%c\n    local: {keyFile: %s}\n", 'a'+i, p)
	}
	c.pluginHC = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := fmt.Sprintf(`socket: %s
stateDir: %s
threshold: 2
backends:
%shealth: {listen: %s, probeInterval: 1s, probeTimeout: 1s}
log: {level: debug, format: text}
`, c.socket, filepath.Join(c.dir, "state"), backends.String(), c.pluginHC)
	c.config = filepath.Join(c.dir, "trousseau.yaml")
	if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) startPlugin() {
	c.plugin = startProcEnv(c.t, c.dir, "trousseau", c.pluginEnv, trousseauBin, "serve", "--config", c.config)
	c.waitPluginReady()
}

func (c *cluster) waitPluginReady() {
	eventually(c.t, 30*time.Second, "trousseau ready", func(ctx context.Context) error {
		if c.plugin.exited() {
			c.t.Fatalf("trousseau exited:\n%s", c.plugin.tail(20))
		}
		return c.pluginGet(ctx, "/readyz", 200)
	})
}

func (c *cluster) pluginGet(ctx context.Context, path string, want int) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.pluginHC+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
	}
	return nil
}

func (c *cluster) backendDown(i int) { c.rename(c.keys[i], c.keys[i]+".away") }
func (c *cluster) backendUp(i int)   { c.rename(c.keys[i]+".away", c.keys[i]) }

func (c *cluster) rename(from, to string) {
	if err := os.Rename(from, to); err != nil {
		c.t.Fatal(err)
	}
}

// apiserverOptions vary between the KMS v2 and v1 runs.
type apiserverOptions struct {
	kmsAPIVersion string // v2 or v1
	etcdPrefix    string
	featureGates  string
	// liveOnly waits for /livez instead of /readyz: readiness needs every
	// Secret to decrypt (the informers' first list).
	liveOnly bool
}

func (c *cluster) writeEncryptionConfig(kmsAPIVersion string) string {
	extra := ""
	if kmsAPIVersion == "v1" {
		extra = ", cachesize: 100"
	}
	cfg := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - kms: {apiVersion: %s, name: trousseau, endpoint: unix://%s, timeout: 3s%s}
      - identity: {}
`, kmsAPIVersion, c.socket, extra)
	p := filepath.Join(c.dir, "encryption-"+kmsAPIVersion+".yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *cluster) startAPIServer(o apiserverOptions) {
	t := c.t
	bin := testutil.KubeAPIServer.Binary(t)
	saKey, saPub := c.writeServiceAccountKeys()
	token := randomHex(16)
	tokens := filepath.Join(c.dir, "tokens.csv")
	os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600)
	port := testutil.FreePort(t)
	args := []string{
		"--etcd-servers", c.etcdURL, "--etcd-prefix", o.etcdPrefix,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", fmt.Sprint(port),
		"--cert-dir", filepath.Join(c.dir, "certs-"+o.kmsAPIVersion),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--authorization-mode", "AlwaysAllow", "--token-auth-file", tokens,
		"--encryption-provider-config", c.writeEncryptionConfig(o.kmsAPIVersion),
		"--enable-priority-and-fairness=false", "--endpoint-reconciler-type", "none",
		"--v", "2",
	}
	if o.featureGates != "" {
		args = append(args, "--feature-gates", o.featureGates)
	}
	c.apiserver = startProc(t, c.dir, "kube-apiserver-"+o.kmsAPIVersion, bin, args...)
	c.rest = &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", port), BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
	kube, err := kubernetes.NewForConfig(c.rest)
	if err != nil {
		t.Fatal(err)
	}
	c.kube = kube
	check := "/readyz"
	if o.liveOnly {
		check = "/livez"
	}
	eventually(t, 3*time.Minute, "kube-apiserver "+check, func(ctx context.Context) error {
		if c.apiserver.exited() {
			t.Fatalf("kube-apiserver exited:\n%s", c.apiserver.tail(30))
		}
		_, err := c.kube.Discovery().RESTClient().Get().AbsPath(check).DoRaw(ctx)
		return err
	})
	t.Log("kube-apiserver ready at", c.rest.Host)
}

// readyz returns the apiserver's answer for one readiness check, or all of them.
func (c *cluster) readyz(ctx context.Context, check string) (string, error) {
	path := "/readyz"
	if check != "" {
		path += "/" + check
	}
	b, err := c.kube.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	return string(b), err
}

func (c *cluster) writeServiceAccountKeys() (keyPath, pubPath string) {
	keyPath, pubPath = filepath.Join(c.dir, "sa.key"), filepath.Join(c.dir, "sa.pub")
	if _, err := os.Stat(keyPath); err == nil {
		return keyPath, pubPath
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		c.t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
	return keyPath, pubPath
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// secondNode is another control-plane node of the same cluster: the same
// etcd and the same key files, its own plugin (socket, state dir) and,
// once started, its own kube-apiserver.
func (c *cluster) secondNode() *cluster {
	n := newCluster(c.t)
	n.etcdURL, n.etcdCli, n.keys = c.etcdURL, c.etcdCli, c.keys
	n.writeConfigFile()
	return n
}

// restartAPIServer stops kube-apiserver and starts a new one, which has
// no cached DEK seeds.
func (c *cluster) restartAPIServer(o apiserverOptions) {
	c.apiserver.stop()
	c.startAPIServer(o)
}

// restartPlugin kills the plugin (no graceful shutdown) and starts it again.
func (c *cluster) restartPlugin() {
	c.plugin.signal(syscall.SIGKILL)
	<-c.plugin.done
	c.startPlugin()
}
