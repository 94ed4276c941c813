package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// memScan is a Source of given values.
type memScan struct {
	kvs []KV
	bad []BadRecord
}

func (m memScan) Scan(_ context.Context, req ScanRequest) (*Scan, error) {
	if req.Total != nil {
		req.Total(len(m.kvs))
	}
	for _, kv := range m.kvs {
		if strings.HasPrefix(kv.Key, normalizePrefix(req.Prefix)) && (req.Keep == nil || req.Keep(kv.Key)) {
			if err := req.Visit(kv); err != nil {
				return nil, err
			}
		}
	}
	return &Scan{Describe: "memory", Bad: m.bad}, nil
}

// TestRunBadValues: every kind of bad input fails its own object with a
// clear reason; the others are still recovered.
func TestRunBadValues(t *testing.T) {
	NeedsDataDecryption(t)
	s := newSealer(t)
	v2 := s.seal(t, fuzzKey, secretBytes(t, "default", "fuzz"))[0]
	src := memScan{
		kvs: []KV{
			{Key: fuzzKey, Value: v2},
			{Key: "/registry/secrets/default/garbage", Value: []byte("\x01\x02garbage")},
			{Key: "/registry/secrets/default/no-name", Value: []byte("k8s:enc:kms:v2:")},
			{Key: "/registry/secrets/default/truncated", Value: v2[:len(v2)/2]},
			{Key: "/registry/secrets/default/moved", Value: v2}, // another key: the AAD differs
			{Key: "/registry/secrets/default/plain", Value: []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"plain","namespace":"default"}}`)},
			{Key: "/registry/health", Value: []byte(`{"health":"true"}`)},
			{Key: "/registry/oddity", Value: s.seal(t, "/registry/oddity", secretBytes(t, "default", "oddity"))[1]},
			// KMS v1 of another plugin under the same provider name.
			{Key: "/registry/secrets/default/v1-other", Value: append([]byte("k8s:enc:kms:v1:trousseau:\x00\x04abcd"), make([]byte, 40)...)},
		},
		bad: []BadRecord{{Ref: "revision 7_0", Err: errors.New("corrupt snapshot: undecodable record")}},
	}
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{Source: src, Envelope: s.env, Sink: NewStreamSink(&out, YAML), Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	sum.WriteTo(&text)
	if sum.Decrypted != 1 || sum.NotEncrypted != 1 || sum.OtherProvider != 1 || sum.Failed != 6 || sum.Found != 9 || sum.OK() {
		t.Fatalf("summary:\n%s", text.String())
	}
	for _, want := range []string{"unknown value format", "revision 7_0", "/registry/oddity", "the key is not <prefix>/<resource>", "cipher: message authentication failed", "cannot parse invalid wire-format data"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, text.String())
		}
	}
	if !strings.Contains(out.String(), "name: fuzz") || strings.Count(out.String(), "kind: Secret") != 1 {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestRunProgressAndCancel(t *testing.T) {
	NeedsDataDecryption(t)
	env, _, _ := fuzzValues(t)
	kvs := plainSecrets(200)
	var progress testutil.Buffer
	sink := &slowSink{StreamSink: NewStreamSink(io.Discard, YAML), d: time.Millisecond}
	sum, err := Run(context.Background(), Options{Source: memScan{kvs: kvs}, Envelope: env, IncludeUnencrypted: true, Sink: sink,
		Progress: &progress, ProgressEvery: 10 * time.Millisecond, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Found != len(kvs) || sum.Unencrypted != len(kvs) || !sum.OK() {
		t.Fatalf("summary: %+v", sum)
	}
	if !strings.Contains(progress.String(), "objects/s") || !strings.Contains(progress.String(), "/200 objects") {
		t.Fatalf("progress:\n%s", progress.String())
	}
	// In the order read, whatever order the workers finished in.
	if !slices.IsSorted(sink.keys) || len(sink.keys) != len(kvs) {
		t.Fatal("objects not written in the order read")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Options{Source: memScan{kvs: kvs}, Envelope: env}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
}

// plainSecrets are n Secrets stored in the clear, named s000, s001...
func plainSecrets(n int) []KV {
	var kvs []KV
	for i := range n {
		name := fmt.Sprintf("s%03d", i)
		kvs = append(kvs, KV{Key: "/registry/secrets/default/" + name, Value: []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"` + name + `","namespace":"default"}}`)})
	}
	return kvs
}

type slowSink struct {
	*StreamSink
	d    time.Duration
	keys []string
}

func (s *slowSink) Put(k Key, b []byte) error {
	time.Sleep(s.d)
	s.keys = append(s.keys, k.Namespace+"/"+k.Name)
	return s.StreamSink.Put(k, b)
}

// TestDryRunChecksTheObjectAgainstItsKey: a dry run, which decodes no
// more of an object than it checks, still fails a Secret sealed under
// the key of another (its metadata names "other").
func TestDryRunChecksTheObjectAgainstItsKey(t *testing.T) {
	NeedsDataDecryption(t)
	s := newSealer(t)
	src := memScan{kvs: []KV{
		{Key: fuzzKey, Value: s.seal(t, fuzzKey, secretBytes(t, "default", "fuzz"))[0]},
		{Key: "/registry/secrets/default/db", Value: s.seal(t, "/registry/secrets/default/db", secretBytes(t, "default", "other"))[0]},
	}}
	sum, err := Run(context.Background(), Options{Source: src, Envelope: s.env})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	sum.WriteTo(&text)
	if sum.Decrypted != 1 || sum.Failed != 1 || !strings.Contains(text.String(), "metadata names default/other, the etcd key default/db") {
		t.Fatalf("summary:\n%s", text.String())
	}
}

// failingAfter gives its values, then fails, as a snapshot that breaks
// part way.
type failingAfter struct{ memScan }

func (f failingAfter) Scan(ctx context.Context, req ScanRequest) (*Scan, error) {
	if _, err := f.memScan.Scan(ctx, req); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: test", ErrCorruptSnapshot)
}

// TestFailedRunEndsTheOutputDirectory: a source that fails part way
// leaves the files written before it, with the directory's flusher and
// handles ended; one that fails before any object makes no directory.
// Closing twice does nothing.
func TestFailedRunEndsTheOutputDirectory(t *testing.T) {
	NeedsDataDecryption(t)
	env, _, _ := fuzzValues(t)
	kvs := plainSecrets(3)
	for _, tc := range []struct {
		name  string
		kvs   []KV
		files int
	}{{"after 3 objects", kvs, 3}, {"before any", nil, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			sink, err := NewDirSink(dir, YAML)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Run(context.Background(), Options{Source: failingAfter{memScan{kvs: tc.kvs}}, Envelope: env, IncludeUnencrypted: true, Sink: sink})
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("run: %v", err)
			}
			if !sink.isClosed() {
				t.Error("the output directory's flusher and handles outlived the run")
			}
			files, _ := filepath.Glob(filepath.Join(dir, "default", "secrets", "*.yaml"))
			if len(files) != tc.files {
				t.Errorf("%d files, want %d", len(files), tc.files)
			}
			if _, err := os.Stat(dir); (err == nil) != (tc.files > 0) {
				t.Errorf("output directory: %v", err)
			}
			if err := sink.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}
