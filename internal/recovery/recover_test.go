package recovery_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

func TestMain(m *testing.M) {
	// kube-apiserver's transformers log each failed value; the
	// summaries under test report them.
	klog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func openKeyring(t testing.TB, cfgPath string) *recovery.Keyring {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := recovery.OpenKeyring(context.Background(), cfg, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kr.Close)
	return kr
}

func run(t testing.TB, opts recovery.Options) *recovery.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := recovery.Run(ctx, opts)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return sum
}

func summaryText(s *recovery.Summary) string {
	var b strings.Builder
	s.WriteTo(&b)
	return b.String()
}

// splitYAML cuts a stream of YAML documents.
func splitYAML(t testing.TB, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, doc)
		}
		out = append(out, m)
	}
	return out
}

// keyOf is the etcd key of a recovered object.
func keyOf(obj map[string]any) string {
	md := obj["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name := md["name"].(string)
	switch obj["kind"] {
	case "Secret":
		return "/registry/secrets/" + ns + "/" + name
	case "ConfigMap":
		return "/registry/configmaps/" + ns + "/" + name
	case "Pod":
		return "/registry/pods/" + ns + "/" + name
	case "Widget":
		return "/registry/example.com/widgets/" + ns + "/" + name
	}
	return "unknown kind " + fmt.Sprint(obj["kind"])
}

// checkObjects compares recovered objects to what the fixture wrote:
// Secret data byte for byte, and no server-managed field left.
func checkObjects(t testing.TB, got []map[string]any, want map[string]any) {
	t.Helper()
	seen := map[string]bool{}
	for _, obj := range got {
		key := keyOf(obj)
		if seen[key] {
			t.Errorf("%s recovered twice", key)
		}
		seen[key] = true
		w, ok := want[key]
		if !ok {
			t.Errorf("%s recovered, not expected", key)
			continue
		}
		md := obj["metadata"].(map[string]any)
		for _, f := range []string{"resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "ownerReferences", "selfLink"} {
			if _, ok := md[f]; ok {
				t.Errorf("%s: metadata.%s not stripped", key, f)
			}
		}
		if obj["apiVersion"] == nil || obj["kind"] == nil {
			t.Errorf("%s: apiVersion or kind missing", key)
		}
		checkObject(t, key, obj, w)
	}
	for key := range want {
		if !seen[key] {
			t.Errorf("%s not recovered", key)
		}
	}
}

func checkObject(t testing.TB, key string, obj map[string]any, want any) {
	t.Helper()
	md := obj["metadata"].(map[string]any)
	switch w := want.(type) {
	case *corev1.Secret:
		var s corev1.Secret
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &s); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if !reflect.DeepEqual(s.Data, w.Data) || s.Type != w.Type {
			t.Errorf("%s: data or type differ", key)
		}
		if !reflect.DeepEqual(s.Labels, w.Labels) || !reflect.DeepEqual(s.Annotations, w.Annotations) {
			t.Errorf("%s: labels or annotations differ: %v %v", key, s.Labels, s.Annotations)
		}
	case *corev1.ConfigMap:
		var cm corev1.ConfigMap
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &cm); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if !reflect.DeepEqual(cm.Data, w.Data) {
			t.Errorf("%s: data differs", key)
		}
	case map[string]any:
		if !reflect.DeepEqual(obj["spec"], w["spec"]) || md["name"] != w["metadata"].(map[string]any)["name"] {
			t.Errorf("%s: %v, want %v", key, obj, w)
		}
	default:
		t.Fatalf("%s: unexpected want %T", key, want)
	}
}

func TestRecover(t *testing.T) {
	recovery.NeedsDataDecryption(t)
	f := recoverytest.NewFixture(t, true)
	snap := f.Snapshot(t, t.TempDir())
	source := recovery.SnapshotFile{Path: snap}
	ab := openKeyring(t, f.Plugin.WriteConfig(t, "local-a", "local-b"))

	for _, names := range [][]string{{"local-a", "local-b"}, {"local-b", "local-c"}, {"local-a", "local-c"}, {"local-a", "local-b", "local-c"}} {
		t.Run(strings.Join(names, "+"), func(t *testing.T) {
			kr := openKeyring(t, f.Plugin.WriteConfig(t, names...))
			var out bytes.Buffer
			sum := run(t, recovery.Options{Source: source, Envelope: kr, Sink: recovery.NewStreamSink(&out, recovery.YAML)})
			text := summaryText(sum)
			if !sum.OK() || sum.Decrypted != f.Decrypted() || sum.Found != f.Found ||
				sum.NotEncrypted != f.NotEncrypted || sum.OtherProvider != f.OtherProvider {
				t.Fatalf("summary:\n%s\nwant found %d, decrypted %d, not encrypted %d, other %d", text, f.Found, f.Decrypted(), f.NotEncrypted, f.OtherProvider)
			}
			checkObjects(t, splitYAML(t, out.Bytes()), f.Want)
			if len(sum.DEKs) != 2 {
				t.Errorf("DEKs: %+v, want the plugin's 2", sum.DEKs)
			}
			for _, d := range sum.DEKs {
				if d.Err != nil || d.Threshold != 2 || len(d.Backends) != 3 {
					t.Errorf("DEK %+v", d)
				}
			}
			// Each distinct DEK was unwrapped once: every configured
			// backend was asked at most once per DEK, and at least k=2
			// answered for each. With three configured, the slowest may be
			// cancelled once two shares combine, and then counts neither way.
			var total int64
			for _, b := range sum.Backends {
				calls := b.Unwraps + b.UnwrapFailures
				total += calls
				if calls > 2 || len(names) == 2 && calls < 2 {
					t.Errorf("backend %s asked %d times for 2 DEKs", b.Name, calls)
				}
			}
			if total < 2*2 {
				t.Errorf("backends answered %d times for 2 DEKs of threshold 2", total)
			}
			for _, want := range []string{"sha256 verified", "2 distinct, 2 recovered", "backend local-", "used"} {
				if !strings.Contains(text, want) {
					t.Errorf("summary lacks %q:\n%s", want, text)
				}
			}
		})
	}

	t.Run("quorum not reached", func(t *testing.T) {
		kr := openKeyring(t, f.Plugin.WriteConfig(t, "local-b"))
		var out bytes.Buffer
		sum := run(t, recovery.Options{Source: source, Envelope: kr, Sink: recovery.NewStreamSink(&out, recovery.YAML)})
		text := summaryText(sum)
		if sum.OK() || sum.Err() == nil || sum.Decrypted != 0 || sum.Failed != f.Decrypted() || out.Len() != 0 {
			t.Fatalf("with 1 of 3:\n%s\noutput %d bytes", text, out.Len())
		}
		// One reason per DEK, and every object of the DEK under it.
		if len(sum.Reasons) != 2 || sum.Reasons[0].Count+sum.Reasons[1].Count != f.Decrypted() {
			t.Fatalf("reasons not grouped by DEK:\n%s", text)
		}
		for _, r := range sum.Reasons {
			if !strings.Contains(r.Text, "quorum not reached for DEK trousseau-v1-") || !strings.Contains(r.Text, "needs 2 of 3 backends (local-a, local-b, local-c)") ||
				!strings.Contains(r.Text, "local-a: not configured") || !strings.Contains(r.Text, "got 1 (local-b)") {
				t.Errorf("reason: %s", r.Text)
			}
		}
		// One unwrap attempt per DEK, not one per object.
		for _, b := range sum.Backends {
			if b.Unwraps != 2 {
				t.Errorf("backend %s: %d unwraps for 2 DEKs", b.Name, b.Unwraps)
			}
		}
		var qe *envelope.QuorumError
		if !errors.As(firstError(t, kr, f), &qe) {
			t.Error("the error does not unwrap to the envelope's QuorumError")
		}
		if !strings.Contains(text, "backends named by the data but not configured: local-a, local-c") {
			t.Errorf("missing backends not reported:\n%s", text)
		}
		checkNoSecrets(t, text, f)
	})

	t.Run("backend skipped or down", func(t *testing.T) {
		dir := t.TempDir()
		// local-a's key file is gone (down); local-d's is open to others
		// (built, but down); vault-e cannot be built (its CA file is
		// gone); local-b and local-c make the quorum.
		loose := filepath.Join(dir, "d.key")
		raw, _ := os.ReadFile(f.Plugin.KeyFiles["local-c"])
		os.WriteFile(loose, raw, 0o644)
		os.Chmod(loose, 0o644)
		cfg := fmt.Sprintf("threshold: 2\nbackends:\n  - name: local-a\n    local: {keyFile: %s}\n  - name: local-b\n    local: {keyFile: %s}\n  - name: local-c\n    local: {keyFile: %s}\n  - name: local-d\n    local: {keyFile: %s}\n%s",
			filepath.Join(dir, "missing.key"), f.Plugin.KeyFiles["local-b"], f.Plugin.KeyFiles["local-c"], loose, unbuildableBackend("vault-e", dir))
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(cfg), 0o600)
		kr := openKeyring(t, path)
		sum := run(t, recovery.Options{Source: source, Envelope: kr})
		text := summaryText(sum)
		if !sum.OK() || sum.Decrypted != f.Decrypted() {
			t.Fatalf("local-b and local-c did not decrypt everything:\n%s", text)
		}
		for _, want := range []string{"backend vault-e: skipped:", "probe at start failed", "has mode 0644", "backend local-b: used, unwrapped 2 shares"} {
			if !strings.Contains(text, want) {
				t.Errorf("summary lacks %q:\n%s", want, text)
			}
		}
		// local-a is asked for each DEK beside the others, and called off
		// once two answered: its second ask fails or is called off, as
		// the race goes; the first always fails.
		if !localADown.MatchString(text) {
			t.Errorf("summary lacks local-a's failed unwraps:\n%s", text)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			opts recovery.Options
			keys []string
		}{
			{"secrets", recovery.Options{Resources: []string{"secrets"}}, []string{"/registry/secrets/"}},
			{"namespace", recovery.Options{Namespace: "team-a"}, []string{"/registry/secrets/team-a/"}},
			{"configmaps in default", recovery.Options{Resources: []string{"configmaps"}, Namespace: "default"}, []string{"/registry/configmaps/default/"}},
			{"custom resource", recovery.Options{Resources: []string{"widgets.example.com"}}, []string{"/registry/example.com/widgets/"}},
			{"two resources", recovery.Options{Resources: []string{"configmaps", "widgets.example.com"}}, []string{"/registry/configmaps/", "/registry/example.com/"}},
			{"provider", recovery.Options{Provider: recoverytest.Provider}, []string{"/registry/"}},
			{"other provider", recovery.Options{Provider: "not-ours"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var out bytes.Buffer
				tc.opts.Source, tc.opts.Envelope, tc.opts.Sink = source, ab, recovery.NewStreamSink(&out, recovery.YAML)
				sum := run(t, tc.opts)
				want := map[string]any{}
				for k, v := range f.Want {
					for _, p := range tc.keys {
						if strings.HasPrefix(k, p) {
							want[k] = v
						}
					}
				}
				if !sum.OK() || sum.Decrypted != len(want) {
					t.Fatalf("decrypted %d, want %d:\n%s", sum.Decrypted, len(want), summaryText(sum))
				}
				checkObjects(t, splitYAML(t, out.Bytes()), want)
			})
		}
	})

	t.Run("other etcd prefix", func(t *testing.T) {
		var out bytes.Buffer
		sum := run(t, recovery.Options{Source: source, Envelope: ab, Prefix: f.AltPrefix, Sink: recovery.NewStreamSink(&out, recovery.YAML)})
		objs := splitYAML(t, out.Bytes())
		if !sum.OK() || sum.Found != 1 || len(objs) != 1 {
			t.Fatalf("%s", summaryText(sum))
		}
		var s corev1.Secret
		runtime.DefaultUnstructuredConverter.FromUnstructured(objs[0], &s)
		if !bytes.Equal(s.Data["k"], f.AltWant.Data["k"]) {
			t.Error("data differs")
		}
	})

	t.Run("output directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		sink, err := recovery.NewDirSink(dir, recovery.YAML)
		if err != nil {
			t.Fatal(err)
		}
		sum := run(t, recovery.Options{Source: source, Envelope: ab, Sink: sink})
		if !sum.OK() {
			t.Fatal(summaryText(sum))
		}
		var got []map[string]any
		files := 0
		err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			st, _ := d.Info()
			if d.IsDir() {
				if st.Mode().Perm() != 0o700 {
					t.Errorf("%s: mode %v", p, st.Mode().Perm())
				}
				return nil
			}
			files++
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v", p, st.Mode().Perm())
			}
			raw, _ := os.ReadFile(p)
			objs := splitYAML(t, raw)
			if len(objs) != 1 {
				t.Fatalf("%s holds %d objects", p, len(objs))
			}
			rel, _ := filepath.Rel(dir, p)
			if want, _ := recovery.PathOf(mustKey(t, keyOf(objs[0])), recovery.YAML); rel != want {
				t.Errorf("%s holds %s", rel, keyOf(objs[0]))
			}
			got = append(got, objs[0])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkObjects(t, got, f.Want)
		for _, p := range []string{"default/secrets/db-password.yaml", "team-b/secrets/after-rotation.yaml", "default/configmaps/app-config.yaml", "default/widgets.example.com/w1.yaml"} {
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				t.Errorf("layout: %v", err)
			}
		}
		// Again into the same directory: files are replaced, not added.
		sink, err = recovery.NewDirSink(dir, recovery.YAML)
		if err != nil {
			t.Fatal(err)
		}
		if sum := run(t, recovery.Options{Source: source, Envelope: ab, Sink: sink}); !sum.OK() {
			t.Fatal(summaryText(sum))
		}
		// A directory open to others is refused.
		open := filepath.Join(t.TempDir(), "open")
		os.Mkdir(open, 0o755)
		os.Chmod(open, 0o755)
		if _, err := recovery.NewDirSink(open, recovery.YAML); err == nil || !strings.Contains(err.Error(), "others could read") {
			t.Errorf("open directory: %v", err)
		}
	})

	t.Run("json", func(t *testing.T) {
		var out bytes.Buffer
		sum := run(t, recovery.Options{Source: source, Envelope: ab, Sink: recovery.NewStreamSink(&out, recovery.JSON)})
		var list struct {
			APIVersion, Kind string
			Items            []map[string]any
		}
		if err := json.Unmarshal(out.Bytes(), &list); err != nil || !sum.OK() {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if list.APIVersion != "v1" || list.Kind != "List" {
			t.Errorf("list: %s %s", list.APIVersion, list.Kind)
		}
		checkObjects(t, list.Items, f.Want)
	})

	t.Run("dry run", func(t *testing.T) {
		sum := run(t, recovery.Options{Source: source, Envelope: ab})
		if !sum.OK() || sum.Decrypted != f.Decrypted() || !strings.Contains(summaryText(sum), "dry run") {
			t.Fatal(summaryText(sum))
		}
	})

	t.Run("include unencrypted", func(t *testing.T) {
		var out bytes.Buffer
		sum := run(t, recovery.Options{Source: source, Envelope: ab, IncludeUnencrypted: true, Sink: recovery.NewStreamSink(&out, recovery.YAML)})
		objs := splitYAML(t, out.Bytes())
		if !sum.OK() || sum.Unencrypted != f.NotEncrypted || len(objs) != f.Decrypted()+f.NotEncrypted {
			t.Fatal(summaryText(sum))
		}
	})

	t.Run("live etcd over TLS", func(t *testing.T) {
		var out bytes.Buffer
		live := recovery.LiveEtcd{Endpoints: []string{f.Etcd.Endpoint}, CACert: f.Etcd.CACert, Cert: f.Etcd.Cert, Key: f.Etcd.Key, PageSize: 3}
		sum := run(t, recovery.Options{Source: live, Envelope: ab, Sink: recovery.NewStreamSink(&out, recovery.YAML)})
		if !sum.OK() || sum.Decrypted != f.Decrypted() || sum.Found != f.Found {
			t.Fatal(summaryText(sum))
		}
		checkObjects(t, splitYAML(t, out.Bytes()), f.Want)
		// Without a client certificate etcd refuses.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := recovery.Run(ctx, recovery.Options{Source: recovery.LiveEtcd{Endpoints: []string{f.Etcd.Endpoint}, CACert: f.Etcd.CACert, DialTimeout: 3 * time.Second}, Envelope: ab})
		if err == nil || !strings.Contains(err.Error(), "etcd") {
			t.Errorf("no client certificate: %v", err)
		}
	})

	t.Run("decrypt one value", func(t *testing.T) {
		key := "/registry/secrets/default/db-password"
		plain, obj, err := recovery.DecryptValue(context.Background(), ab, "", "", key, f.Stored[key])
		if err != nil || len(plain) == 0 {
			t.Fatal(err)
		}
		checkObject(t, key, obj, f.Want[key])
		// The key is the authenticated data: another key fails.
		if _, _, err := recovery.DecryptValue(context.Background(), ab, "", "", "/registry/secrets/default/other", f.Stored[key]); err == nil {
			t.Error("decrypted under another key")
		}
	})

	t.Run("no secrets in errors", func(t *testing.T) {
		key := "/registry/secrets/default/broken"
		stored := f.Writer.Seal(key, []byte(`{"apiVersion":"v1","kind":"Secret","data":{"k":"SUPERSECRET-VALUE"}`), recoverytest.KMSv2)
		src := memSource{{Key: key, Value: stored}}
		sum := run(t, recovery.Options{Source: src, Envelope: ab})
		text := summaryText(sum)
		if sum.Failed != 1 || !strings.Contains(text, "not a readable Kubernetes object") {
			t.Fatal(text)
		}
		if strings.Contains(text, "SUPERSECRET") {
			t.Fatalf("summary quotes the plaintext:\n%s", text)
		}
	})
}

// unbuildableBackend is a backends entry that passes Validate but that
// cannot be built: its CA file is missing. (A local backend is always
// built: an unusable key file is a backend that is down.)
func unbuildableBackend(name, dir string) string {
	return fmt.Sprintf("  - name: %s\n    vault: {address: https://127.0.0.1:1, keyName: k, caFile: %s, auth: {tokenFile: %s}}\n",
		name, filepath.Join(dir, "missing-ca.pem"), filepath.Join(dir, "token"))
}

func TestOpenKeyringNothingBuilt(t *testing.T) {
	cfg, err := config.Parse([]byte("threshold: 1\nbackends:\n" + unbuildableBackend("a", t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	_, err = recovery.OpenKeyring(context.Background(), cfg, time.Second)
	if err == nil || !strings.Contains(err.Error(), "no backend of the config could be built") || !strings.Contains(err.Error(), "backends[0] (a)") {
		t.Fatalf("%v", err)
	}
}

// localADown is the summary line of a backend whose key file is gone,
// asked for two DEKs.
var localADown = regexp.MustCompile(`backend local-a: not used, (2 unwraps failed|1 unwrap failed, 1 unwrap not needed \(called off: enough others answered first\))`)

// failingSource is a Source that cannot be read.
type failingSource struct{}

func (failingSource) Scan(context.Context, recovery.ScanRequest) (*recovery.Scan, error) {
	return nil, fmt.Errorf("%w: test", recovery.ErrCorruptSnapshot)
}

// TestOutputDirectoryCreatedOnlyOnceTheSourceIsRead: a snapshot
// that cannot be read leaves no output directory behind.
func TestOutputDirectoryCreatedOnlyOnceTheSourceIsRead(t *testing.T) {
	recovery.NeedsDataDecryption(t)
	for _, tc := range []struct {
		name   string
		source recovery.Source
		exists bool
	}{
		{"unreadable source", failingSource{}, false},
		{"empty source", memSource{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			sink, err := recovery.NewDirSink(dir, recovery.YAML)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("NewDirSink created %s: %v", dir, err)
			}
			recovery.Run(context.Background(), recovery.Options{Source: tc.source, Envelope: nopEnvelope{}, Sink: sink})
			if _, err := os.Stat(dir); (err == nil) != tc.exists {
				t.Fatalf("after the run: %v, want exists=%v", err, tc.exists)
			}
		})
	}
	t.Run("parent missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "no", "out")
		if _, err := recovery.NewDirSink(dir, recovery.YAML); err == nil || !strings.Contains(err.Error(), "cannot be created in") {
			t.Fatalf("got %v", err)
		}
	})
}

// nopEnvelope decrypts nothing; the tests that use it have no values.
type nopEnvelope struct{}

func (nopEnvelope) Decrypt(context.Context, []byte, []byte) ([]byte, error) {
	return nil, errors.New("nothing to decrypt")
}

// firstError decrypts one fixture value and returns the error.
func firstError(t testing.TB, kr *recovery.Keyring, f *recoverytest.Fixture) error {
	key := "/registry/secrets/default/db-password"
	_, _, err := recovery.DecryptValue(context.Background(), kr, "", "", key, f.Stored[key])
	if err == nil {
		t.Fatal("decrypted with 1 of 3")
	}
	return err
}

// checkNoSecrets fails if text holds any of the fixture's secret data.
func checkNoSecrets(t testing.TB, text string, f *recoverytest.Fixture) {
	t.Helper()
	for key, w := range f.Want {
		s, ok := w.(*corev1.Secret)
		if !ok {
			continue
		}
		for _, v := range s.Data {
			if len(v) < 8 {
				continue
			}
			if strings.Contains(text, string(v)) || strings.Contains(text, base64.StdEncoding.EncodeToString(v)) || strings.Contains(text, fmt.Sprintf("%x", v)) {
				t.Errorf("text holds the data of %s", key)
			}
		}
	}
}

func mustKey(t testing.TB, key string) recovery.Key {
	k, err := recovery.ParseKey("/registry", key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// memSource is a Source of given values.
type memSource []recovery.KV

func (m memSource) Scan(_ context.Context, req recovery.ScanRequest) (*recovery.Scan, error) {
	for _, kv := range m {
		if strings.HasPrefix(kv.Key, strings.TrimSuffix(req.Prefix, "/")+"/") && (req.Keep == nil || req.Keep(kv.Key)) {
			if err := req.Visit(kv); err != nil {
				return nil, err
			}
		}
	}
	return &recovery.Scan{Describe: "memory"}, nil
}
