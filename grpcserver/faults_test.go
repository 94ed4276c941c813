package grpcserver_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	kmsv1 "k8s.io/kms/apis/v1beta1"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/grpcserver"
)

func rawClient(t *testing.T, h *harness) (kmsv2.KeyManagementServiceClient, kmsv1.KeyManagementServiceClient) {
	conn, err := grpc.NewClient(h.endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kmsv2.NewKeyManagementServiceClient(conn), kmsv1.NewKeyManagementServiceClient(conn)
}

func encrypt(t *testing.T, c kmsv2.KeyManagementServiceClient) (*kmsv2.EncryptResponse, []byte) {
	seed := make([]byte, 32)
	rand.Read(seed)
	resp, err := c.Encrypt(callCtx(t), &kmsv2.EncryptRequest{Plaintext: seed, Uid: "u"})
	if err != nil {
		t.Fatal(err)
	}
	return resp, seed
}

func decrypt(t *testing.T, c kmsv2.KeyManagementServiceClient, r *kmsv2.EncryptResponse) ([]byte, error) {
	resp, err := c.Decrypt(callCtx(t), &kmsv2.DecryptRequest{Ciphertext: r.Ciphertext, KeyId: r.KeyId, Annotations: r.Annotations, Uid: "u"})
	return resp.GetPlaintext(), err
}

func status2(t *testing.T, c kmsv2.KeyManagementServiceClient) *kmsv2.StatusResponse {
	st, err := c.Status(callCtx(t), &kmsv2.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestOneBackendDownKeepsWorking(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, _ := rawClient(t, h)
	before, seed := encrypt(t, c)
	h.down(1)
	h.probe()
	if st := status2(t, c); st.Healthz != "ok" {
		t.Fatalf("Status with one of three down: %q", st.Healthz)
	}
	after, seed2 := encrypt(t, c)
	if after.KeyId != before.KeyId {
		t.Fatal("key id changed because a backend went down")
	}
	// A restarted plugin (cold cache) still decrypts with 2 of 3.
	h.stop()
	h.start()
	c, _ = rawClient(t, h)
	for _, tc := range []struct {
		r    *kmsv2.EncryptResponse
		want []byte
	}{{before, seed}, {after, seed2}} {
		got, err := decrypt(t, c, tc.r)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Fatalf("Decrypt with one backend down: %v", err)
		}
	}
}

func TestQuorumLostThenRecovered(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, _ := rawClient(t, h)
	r, seed := encrypt(t, c)
	if _, err := decrypt(t, c, r); err != nil { // warm the DEK cache
		t.Fatal(err)
	}
	h.down(0)
	h.down(2)
	h.probe()
	st := status2(t, c)
	for _, want := range []string{"quorum lost", "1 of 3", "2 needed", "local-a", "local-c"} {
		if !strings.Contains(st.Healthz, want) {
			t.Errorf("Status healthz %q does not say %q", st.Healthz, want)
		}
	}
	if st.KeyId != r.KeyId {
		t.Error("key id changed while unhealthy")
	}
	// Cached DEKs still decrypt; Encrypt needs no backend either.
	if got, err := decrypt(t, c, r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("cached decrypt with quorum lost: %v", err)
	}
	encrypt(t, c)
	// A DEK not in the cache cannot be recovered: Unavailable.
	h.stop()
	h.start2BelowQuorum()
	c, _ = rawClient(t, h)
	if _, err := decrypt(t, c, r); status.Code(err) != codes.Unavailable {
		t.Fatalf("cold decrypt with quorum lost: %v, want Unavailable", err)
	}
	// Backends return: the plugin recovers by itself on its next probes.
	h.up(0)
	h.up(2)
	h.waitHealthz(func(s string) bool { return s == "ok" })
	if got, err := decrypt(t, c, r); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt after recovery: %v", err)
	}
}

// start2BelowQuorum starts the plugin while the quorum is lost, with a
// fast probe interval, without waiting for health.
func (h *harness) start2BelowQuorum() {
	h.fastProbe = true
	h.startNoWait()
}

func TestRestartKeepsKeyID(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, _ := rawClient(t, h)
	var written []*kmsv2.EncryptResponse
	var seeds [][]byte
	for range 3 {
		r, s := encrypt(t, c)
		written, seeds = append(written, r), append(seeds, s)
	}
	keyID := status2(t, c).KeyId
	h.stop()
	h.start()
	c, _ = rawClient(t, h)
	if got := status2(t, c).KeyId; got != keyID {
		t.Fatalf("key id %q after restart, was %q", got, keyID)
	}
	for i, r := range written {
		if got, err := decrypt(t, c, r); err != nil || !bytes.Equal(got, seeds[i]) {
			t.Fatalf("decrypt after restart: %v", err)
		}
	}
}

func TestRotationOnRequest(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, _ := rawClient(t, h)
	old, seed := encrypt(t, c)
	h.plugin.Prober().ProbeOnce(callCtx(t), true)
	st := status2(t, c)
	if st.KeyId == old.KeyId {
		t.Fatal("key id unchanged after rotation")
	}
	if r, _ := encrypt(t, c); r.KeyId != st.KeyId {
		t.Fatal("Encrypt and Status disagree on the key id")
	}
	if got, err := decrypt(t, c, old); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("old data after rotation: %v", err)
	}
	// With a backend down the rotation is postponed and says so.
	h.down(2)
	h.plugin.Prober().ProbeOnce(callCtx(t), true)
	snap := h.plugin.Prober().Snapshot()
	if snap.KeyID != st.KeyId || !strings.Contains(snap.RotationPending, "postponed") {
		t.Fatalf("rotation with a backend down: key %q, pending %q", snap.KeyID, snap.RotationPending)
	}
	if snap.Healthz != "ok" {
		t.Fatalf("a postponed rotation made the plugin unhealthy: %q", snap.Healthz)
	}
	// The request is remembered: once the backend is back, the next
	// ordinary probe rotates.
	h.up(2)
	h.probe()
	if again := h.plugin.Prober().Snapshot(); again.KeyID == st.KeyId || again.RotationPending != "" {
		t.Fatalf("postponed rotation not retried: key %q, pending %q", again.KeyID, again.RotationPending)
	}
	rotated := h.plugin.Prober().Snapshot().KeyID
	h.probe()
	if h.plugin.Prober().Snapshot().KeyID != rotated {
		t.Fatal("a fulfilled request rotated again")
	}
}

// TestBadRequests sends garbage, truncated, oversized and tampered requests
// from many goroutines: each gets the documented code, and the server
// keeps serving.
func TestBadRequests(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, c1 := rawClient(t, h)
	good, _ := encrypt(t, c)
	hdr := good.Annotations[grpcserver.SharesAnnotation]
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i%len(b)] ^= 0x20; return b }
	big := make([]byte, 40*1024)
	type req = kmsv2.DecryptRequest
	ann := func(v []byte) map[string][]byte { return map[string][]byte{grpcserver.SharesAnnotation: v} }
	// Each carries the right key_id unless the case is about it, so that
	// the checks behind the key_id check are reached.
	id := good.KeyId
	cases := map[string]*req{
		"empty ciphertext":      {KeyId: id, Annotations: good.Annotations},
		"oversized ciphertext":  {KeyId: id, Ciphertext: make([]byte, 1025), Annotations: good.Annotations},
		"garbage ciphertext":    {KeyId: id, Ciphertext: []byte("garbage"), Annotations: good.Annotations},
		"missing annotation":    {KeyId: id, Ciphertext: good.Ciphertext},
		"garbage annotation":    {KeyId: id, Ciphertext: good.Ciphertext, Annotations: ann([]byte("garbage"))},
		"truncated annotation":  {KeyId: id, Ciphertext: good.Ciphertext, Annotations: ann(hdr[:len(hdr)/2])},
		"oversized annotations": {KeyId: id, Ciphertext: good.Ciphertext, Annotations: map[string][]byte{grpcserver.SharesAnnotation: hdr, "x.example.com": big}},
		"oversized key id":      {Ciphertext: good.Ciphertext, Annotations: good.Annotations, KeyId: strings.Repeat("k", 1025)},
		"empty key id":          {Ciphertext: good.Ciphertext, Annotations: good.Annotations},
		"another key id":        {Ciphertext: good.Ciphertext, Annotations: good.Annotations, KeyId: id + "x"},
		"tampered ciphertext":   {KeyId: id, Ciphertext: flip(good.Ciphertext, 20), Annotations: good.Annotations},
		"truncated ciphertext":  {KeyId: id, Ciphertext: good.Ciphertext[:len(good.Ciphertext)-3], Annotations: good.Annotations},
		"tampered header":       {KeyId: id, Ciphertext: good.Ciphertext, Annotations: ann(flip(hdr, 100))},
		"tampered commitment":   {KeyId: id, Ciphertext: good.Ciphertext, Annotations: ann(flip(hdr, len(hdr)-1))},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for round := range 5 {
		for name, r := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Decrypt(callCtx(t), r)
				if status.Code(err) != codes.InvalidArgument {
					errs <- fmt.Errorf("round %d, %s: %v, want InvalidArgument", round, name, err)
				}
			}()
		}
		for name, pt := range map[string][]byte{"empty plaintext": nil, "oversized plaintext": make([]byte, 4096)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Encrypt(callCtx(t), &kmsv2.EncryptRequest{Plaintext: pt})
				if status.Code(err) != codes.InvalidArgument {
					errs <- fmt.Errorf("%s: %v, want InvalidArgument", name, err)
				}
				_, err = c1.Encrypt(callCtx(t), &kmsv1.EncryptRequest{Version: "v1beta1", Plain: pt})
				if status.Code(err) != codes.InvalidArgument {
					errs <- fmt.Errorf("v1 %s: %v, want InvalidArgument", name, err)
				}
			}()
		}
		for name, r := range map[string]*kmsv1.DecryptRequest{
			"v1 garbage":       {Version: "v1beta1", Cipher: []byte("garbage")},
			"v1 empty":         {Version: "v1beta1"},
			"v1 wrong version": {Version: "v9", Cipher: []byte("x")},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c1.Decrypt(callCtx(t), r); status.Code(err) != codes.InvalidArgument {
					errs <- fmt.Errorf("%s: %v, want InvalidArgument", name, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Still serving, still healthy, still decrypting.
	if st := status2(t, c); st.Healthz != "ok" {
		t.Fatalf("after bad requests: %q", st.Healthz)
	}
	if _, err := decrypt(t, c, good); err != nil {
		t.Fatal(err)
	}
	// Unknown methods are refused, not crashed on.
	conn, _ := grpc.NewClient(h.endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	err := conn.Invoke(callCtx(t), "/v2.KeyManagementService/Rotate", &kmsv2.StatusRequest{}, &kmsv2.StatusResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: %v", err)
	}
}

func TestFirstStartWithABackendDown(t *testing.T) {
	h := newHarness(t)
	h.down(2)
	h.startNoWait()
	h.probe()
	s := h.plugin.Prober().Snapshot()
	if s.Healthz != "no DEK yet: a new one needs all 3 backends (down: local-c unavailable)" {
		t.Fatalf("healthz: %q", s.Healthz)
	}
	if strings.Contains(s.Healthz, h.dir) {
		t.Fatal("healthz carries backend error text (paths)")
	}
	if w := strings.Join(s.Warnings(time.Now()), "\n"); !strings.Contains(w, "no usable DEK") || !strings.Contains(w, "local-c") {
		t.Fatalf("status warnings should say why there is no DEK: %q", w)
	}
	if body := metricsBody(t, h); strings.Contains(body, "trousseau_dek_custody_margin{") || strings.Contains(body, "trousseau_dek_current_info{") {
		t.Fatalf("custody or current-DEK series with no DEK:\n%s", body)
	}
	c, _ := rawClient(t, h)
	_, err := c.Encrypt(callCtx(t), &kmsv2.EncryptRequest{Plaintext: make([]byte, 32), Uid: "u"})
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "not ready: no usable DEK yet (see the plugin log)" {
		t.Fatalf("Encrypt before the first DEK: %v", err)
	}
	h.up(2)
	h.probe()
	if s := h.plugin.Prober().Snapshot(); s.Healthz != "ok" || s.KeyID == "" {
		t.Fatalf("after the backend came back: %+v", s)
	}
}
