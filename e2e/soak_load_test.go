//go:build soak

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trousseau-io/trousseau/internal/soak"
)

// The load: per node one writer of Secrets and one of ConfigMaps, each
// over its own objects, and one reader over every object; a few requests
// a second in all, so that a loaded machine's slowness is not mistaken
// for a fault.
const (
	objectsPerWriter = 40
	writeEvery       = 1500 * time.Millisecond
	readEvery        = time.Second
	checkEvery       = 2 * time.Minute
	requestTimeout   = 45 * time.Second
)

func (r *soakRig) startLoad(ctx context.Context, wg *sync.WaitGroup) {
	for i, n := range r.nodes {
		for j, res := range []string{"secrets", "configmaps"} {
			rnd := rand.New(rand.NewPCG(uint64(i), uint64(j)))
			wg.Go(func() { r.writer(ctx, n, res, rnd) })
		}
		rnd := rand.New(rand.NewPCG(uint64(i), 7))
		wg.Go(func() { r.reader(ctx, n, rnd) })
	}
}

func jitter(rnd *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(rnd.Int64N(int64(d)))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (r *soakRig) writer(ctx context.Context, n *soakNode, resource string, rnd *rand.Rand) {
	for sleepCtx(ctx, jitter(rnd, writeEvery)) {
		o := soak.Object{Resource: resource, Namespace: "soak-" + n.name, Name: fmt.Sprintf("obj-%d", rnd.IntN(objectsPerWriter))}
		r.write(n, o, "write")
	}
}

func (r *soakRig) reader(ctx context.Context, n *soakNode, rnd *rand.Rand) {
	for sleepCtx(ctx, jitter(rnd, readEvery)) {
		if all := r.hist.All(); len(all) > 0 {
			r.check(n, all[rnd.IntN(len(all))], "read")
		}
	}
}

// periodicChecks reads every object through both nodes and scans etcd.
func (r *soakRig) periodicChecks(ctx context.Context) {
	for sleepCtx(ctx, checkEvery) {
		r.checkAll("check")
		r.scanEtcd()
	}
}

// write creates or replaces o through n with new contents, and records
// the outcome. It returns whether the write was acknowledged.
func (r *soakRig) write(n *soakNode, o soak.Object, op string) bool {
	defer r.hist.Lock(o)()
	canary := soak.CanaryPrefix + randomHex(16)
	data := map[string][]byte{"value": []byte(canary), "node": []byte(n.name), "binary": {0, 1, 2, 0xfe, 0xff}}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	got, rv, err := r.put(ctx, n, o, data, r.hist.Exists(o))
	if apierrors.IsAlreadyExists(err) { // an earlier create whose answer was lost
		got, rv, err = r.put(ctx, n, o, data, true)
	}
	if err != nil {
		r.failed(op, n, o, err)
		if apierrors.IsNotFound(err) {
			r.lost(o, "an update of it through %s: not found", n.name)
		}
		r.hist.Unknown(o, data)
		return false
	}
	r.rec.Request(op, n.name, time.Now(), "")
	r.hist.Acked(o, got, rv)
	r.rec.Update(func(rep *soak.Report) { rep.WritesAcked++ })
	return true
}

// put creates o, or replaces it unconditionally, and returns the data and
// resourceVersion the API answered with.
func (r *soakRig) put(ctx context.Context, n *soakNode, o soak.Object, data map[string][]byte, exists bool) (map[string][]byte, string, error) {
	kube := n.kube.Load().CoreV1()
	meta := metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace}
	if o.Resource == "secrets" {
		s := &corev1.Secret{ObjectMeta: meta, Data: data}
		var err error
		if exists {
			s, err = kube.Secrets(o.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		} else {
			s, err = kube.Secrets(o.Namespace).Create(ctx, s, metav1.CreateOptions{})
		}
		if err != nil {
			return nil, "", err
		}
		return s.Data, s.ResourceVersion, nil
	}
	cm := &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{}, BinaryData: map[string][]byte{}}
	for k, v := range data {
		if k == "binary" {
			cm.BinaryData[k] = v
		} else {
			cm.Data[k] = string(v)
		}
	}
	var err error
	if exists {
		cm, err = kube.ConfigMaps(o.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	} else {
		cm, err = kube.ConfigMaps(o.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, "", err
	}
	return configMapData(cm), cm.ResourceVersion, nil
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		out[k] = v
	}
	return out
}

// get reads o through n; found is false for NotFound.
func (r *soakRig) get(n *soakNode, o soak.Object) (data map[string][]byte, found bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	kube := n.kube.Load().CoreV1()
	if o.Resource == "secrets" {
		s, err := kube.Secrets(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil {
			return nil, false, err
		}
		return s.Data, true, nil
	}
	cm, err := kube.ConfigMaps(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	return configMapData(cm), true, nil
}

// check reads o through n and judges the read against the history. It
// returns what it read, when the read was judged.
func (r *soakRig) check(n *soakNode, o soak.Object, op string) (map[string][]byte, bool) {
	defer r.hist.Lock(o)()
	data, found, err := r.get(n, o)
	if err != nil && !apierrors.IsNotFound(err) {
		r.failed(op, n, o, err)
		return nil, false
	}
	r.rec.Request(op, n.name, time.Now(), "")
	r.rec.Update(func(rep *soak.Report) { rep.ReadsChecked++ })
	switch r.hist.Check(o, found, data) {
	case soak.Lost:
		r.lost(o, "read through %s (found=%v)", n.name, found)
	case soak.Stale:
		r.rec.Update(func(rep *soak.Report) { rep.Stale++ })
		r.rec.Problem("stale: %s read through %s returned an older acknowledged write", o, n.name)
	}
	return data, found
}

func (r *soakRig) lost(o soak.Object, format string, args ...any) {
	r.rec.Update(func(rep *soak.Report) { rep.Lost++ })
	r.rec.Problem("lost: %s: %s", o, fmt.Sprintf(format, args...))
}

// checkAll reads every object through both nodes; it returns what node 1
// read of each object that read back.
func (r *soakRig) checkAll(op string) map[soak.Object]map[string][]byte {
	seen := map[soak.Object]map[string][]byte{}
	for _, o := range r.hist.All() {
		for i, n := range r.nodes {
			data, found := r.check(n, o, op)
			if i == 0 && found {
				seen[o] = data
			}
		}
	}
	return seen
}

// failed records a failed request with its cause, and its text in the
// soak log (the text names objects, never their contents).
func (r *soakRig) failed(op string, n *soakNode, o soak.Object, err error) {
	cause := soak.Cause(err)
	r.rec.Request(op, n.name, time.Now(), cause)
	r.logf("request failed: %s %s through %s: %s: %v", op, o, n.name, cause, err)
}

// scanEtcd reads every Secret and ConfigMap raw from etcd: each is stored
// by Trousseau (the KMS v2 prefix) and none holds a canary in the clear.
func (r *soakRig) scanEtcd() {
	for _, prefix := range []string{"/registry/secrets/", "/registry/configmaps/"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		resp, err := r.nodes[0].c.etcdCli.Get(ctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			r.rec.Problem("etcd scan of %s: %v", prefix, err)
			continue
		}
		for _, kv := range resp.Kvs {
			if !bytes.HasPrefix(kv.Value, []byte(v2Prefix)) || len(soak.Leaks(kv.Value)) > 0 {
				r.rec.Update(func(rep *soak.Report) { rep.Unencrypted++ })
				r.rec.Problem("unencrypted: %s stored without %s or with a canary in the clear", kv.Key, v2Prefix)
			}
		}
	}
}

// storedKeyIDs returns the key_id of every Secret and ConfigMap in etcd.
func (r *soakRig) storedKeyIDs() (map[string]string, error) {
	out := map[string]string{}
	for _, prefix := range []string{"/registry/secrets/", "/registry/configmaps/"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		resp, err := r.nodes[0].c.etcdCli.Get(ctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			id, err := storedKeyIDOf(kv.Value)
			if err != nil {
				id = err.Error()
			}
			out[string(kv.Key)] = id
		}
	}
	return out, nil
}
