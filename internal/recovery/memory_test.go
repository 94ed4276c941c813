package recovery

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// memoryTestSecrets and memoryTestData make a snapshot whose values alone
// (about 40 MB) are more than the heap bound below: a recovery that holds
// every value at once cannot stay under it.
const (
	memoryTestSecrets = 15000
	memoryTestData    = 2500
	memoryHeapBound   = 24 << 20
)

// TestRunMemoryIsBounded recovers a snapshot of 15,000 Secrets, some of
// them written twice and some deleted, to YAML under a memory limit,
// and checks the right version of each came out while the heap never
// grew more than memoryHeapBound above what it held before the run.
func TestRunMemoryIsBounded(t *testing.T) {
	NeedsDataDecryption(t)
	s := newSealer(t)
	path := filepath.Join(t.TempDir(), "big.snapshot")
	want := writeBigSnapshot(t, s, path)

	runtime.GC()
	base := heapInUse()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(base + memoryHeapBound*2/3)))
	stop := sampleHeap()
	sink := &checkingSink{want: want}
	sum, err := Run(context.Background(), Options{Source: SnapshotFile{Path: path}, Envelope: s.env, Sink: sink})
	peak := stop()
	if err != nil || !sum.OK() || sum.Decrypted != len(want) || sink.wrong != 0 {
		t.Fatalf("run: %v, %d wrong versions, summary %+v", err, sink.wrong, sum)
	}
	t.Logf("heap: %d MB before, %d MB at most during the run", base>>20, peak>>20)
	if peak > base+memoryHeapBound {
		t.Fatalf("the heap grew by %d MB during the run, over the bound of %d MB: does something hold every object?", (peak-base)>>20, memoryHeapBound>>20)
	}
}

// writeBigSnapshot writes the snapshot and returns the generation each
// live Secret's manifest must show.
func writeBigSnapshot(t *testing.T, s sealer, path string) map[string]string {
	snap, err := recoverytest.NewBoltSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	pad := bytes.Repeat([]byte("x"), memoryTestData)
	want := map[string]string{}
	put := func(i int, gen string) {
		name := fmt.Sprintf("secret-%05d", i)
		key := "/registry/secrets/ns-" + fmt.Sprint(i%7) + "/" + name
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns-" + fmt.Sprint(i%7), Labels: map[string]string{"gen": gen}},
			Data: map[string][]byte{"pad": pad}}
		if err := snap.Put(key, sealV2(t, s, key, secret)); err != nil {
			t.Fatal(err)
		}
		want[name] = gen
	}
	for i := range memoryTestSecrets {
		put(i, "first")
	}
	for i := 0; i < memoryTestSecrets; i += 100 {
		put(i, "second") // rewritten: the later revision wins
	}
	for i := 50; i < memoryTestSecrets; i += 1000 {
		name := fmt.Sprintf("secret-%05d", i)
		if err := snap.Delete("/registry/secrets/ns-" + fmt.Sprint(i%7) + "/" + name); err != nil {
			t.Fatal(err)
		}
		delete(want, name)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

var secretCodec = scheme.Codecs.EncoderForVersion(protobuf.NewSerializer(scheme.Scheme, scheme.Scheme), corev1.SchemeGroupVersion)

func sealV2(t testing.TB, s sealer, key string, secret *corev1.Secret) []byte {
	var b bytes.Buffer
	if err := secretCodec.Encode(secret, &b); err != nil {
		t.Fatal(err)
	}
	v, err := s.v2.TransformToStorage(context.Background(), b.Bytes(), value.DefaultContext(key))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkingSink counts the manifests that do not show the generation
// wanted of their Secret, and keeps nothing else.
type checkingSink struct {
	want  map[string]string
	wrong int
}

func (c *checkingSink) Format() Format { return YAML }
func (c *checkingSink) Close() error   { return nil }

func (c *checkingSink) Put(k Key, rendered []byte) error {
	if !strings.Contains(string(rendered), "gen: "+c.want[k.Name]+"\n") {
		c.wrong++
	}
	return nil
}

func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// sampleHeap samples the heap every millisecond until stop, which
// returns the largest sample.
func sampleHeap() (stop func() uint64) {
	var peak uint64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, heapInUse())
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(quit); wg.Wait(); return peak }
}
