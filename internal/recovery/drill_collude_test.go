package recovery_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Two colluding custodians of 3-of-4 make four shares agree on a wrong
// polynomial: the state's own header is not called tampered (no etcd
// writer can plant it), and the drill exits 2, since the DEK cannot be
// opened.
func TestDrillExitCodeWithTwoColludersOfThreeOfFour(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	bs := keyFileBackends(t, dir, 4)
	maker, err := envelope.New(envelope.Config{Threshold: 3, Backends: bs, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if err := maker.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	roots := []byte{3, 4}
	e, err := envelope.New(envelope.Config{Threshold: 3, Backends: []kmsclients.Backend{testutil.Colluder{Backend: bs[0], Roots: roots}, testutil.Colluder{Backend: bs[1], Roots: roots}, bs[2], bs[3]}})
	if err != nil {
		t.Fatal(err)
	}
	r := drillLogged(t, recovery.DrillOptions{StateDir: state, Envelope: e})
	if code := r.ExitCode(1); code != 2 {
		t.Fatalf("exit %d: the state's DEK cannot be opened, want 2", code)
	}
}

type downBackend struct{ kmsclients.Backend }

func (downBackend) Unwrap(context.Context, kmsclients.Wrapped, []byte) ([]byte, error) {
	return nil, fmt.Errorf("down: %w", kmsclients.ErrUnavailable)
}

func kmsValue(t *testing.T, header, ct []byte, keyID string) []byte {
	b, err := proto.Marshal(&kmstypes.EncryptedObject{EncryptedData: ct, KeyID: keyID, Annotations: map[string][]byte{envelope.SharesAnnotation: header}})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("k8s:enc:kms:v2:trousseau:"), b...)
}

// An etcd writer plants three copies of a genuine header, each with one
// byte of b1's wrapped share changed, beside more objects: each needs one
// new backend call, so they use up the bound on copies and the genuine
// header is not drilled. The copies are tampered, but the DEK id has no
// header that checked out: exit 1 (margin unknown), not 0.
func TestDrillCannotBeMadeToSkipTheGenuineHeader(t *testing.T) {
	dir := t.TempDir()
	bs := keyFileBackends(t, dir, 5)
	maker, err := envelope.New(envelope.Config{Threshold: 2, Backends: bs})
	if err != nil {
		t.Fatal(err)
	}
	if err := maker.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := maker.Encrypt([]byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := envelope.ParseHeader(s.Header)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(s.Header, h.Shares[0].Wrapped) + len(h.Shares[0].Wrapped)/2
	kvs := fakeSource{{Key: "/registry/secrets/ns/genuine", Value: kmsValue(t, s.Header, s.Ciphertext, s.KeyID)}}
	for c := range 3 {
		forged := bytes.Clone(s.Header)
		forged[at] ^= byte(c + 1)
		for o := range 5 {
			kvs = append(kvs, recovery.KV{Key: fmt.Sprintf("/registry/secrets/ns/copy-%d-%d", c, o), Value: kmsValue(t, forged, s.Ciphertext, s.KeyID)})
		}
	}
	e, err := envelope.New(envelope.Config{Threshold: 2, Backends: append(bs[:4:4], downBackend{bs[4]})})
	if err != nil {
		t.Fatal(err)
	}
	r := drillLogged(t, recovery.DrillOptions{Source: kvs, Envelope: e})
	if code := r.ExitCode(3); code != 1 {
		t.Fatalf("exit %d: the genuine DEK has margin 2 (b5 down), below 3: want 1", code)
	}
}

type hangBackend struct{ kmsclients.Backend }

func (hangBackend) Unwrap(ctx context.Context, _ kmsclients.Wrapped, _ []byte) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// Same, with copies that change only the commitment and a backend that
// hangs until each check's deadline: it is asked once per session, so
// the copies need no new call, the genuine header is drilled, and its
// margin (2, below 3) is reported.
func TestDrillWithADarkBackendStillDrillsTheGenuineHeader(t *testing.T) {
	dir := t.TempDir()
	bs := keyFileBackends(t, dir, 5)
	maker, err := envelope.New(envelope.Config{Threshold: 2, Backends: bs})
	if err != nil {
		t.Fatal(err)
	}
	if err := maker.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, _ := maker.Encrypt([]byte("seed"))
	kvs := fakeSource{{Key: "/registry/secrets/ns/genuine", Value: kmsValue(t, s.Header, s.Ciphertext, s.KeyID)}}
	for c := range 3 {
		forged := bytes.Clone(s.Header)
		forged[len(forged)-1] ^= byte(c + 1)
		for o := range 5 {
			kvs = append(kvs, recovery.KV{Key: fmt.Sprintf("/registry/secrets/ns/copy-%d-%d", c, o), Value: kmsValue(t, forged, s.Ciphertext, s.KeyID)})
		}
	}
	e, _ := envelope.New(envelope.Config{Threshold: 2, Backends: append(bs[:4:4], hangBackend{bs[4]})})
	r := drillLogged(t, recovery.DrillOptions{Source: kvs, Envelope: e, CheckTimeout: 100 * time.Millisecond})
	if code := r.ExitCode(3); code != 1 {
		t.Fatalf("exit %d: the genuine DEK has margin 2 (b5 dark), below 3: want 1", code)
	}
}

// keyFileBackends makes n key-file backends b1..bn in dir.
func keyFileBackends(t *testing.T, dir string, n int) []kmsclients.Backend {
	var bs []kmsclients.Backend
	for i := range n {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		b, err := local.New(context.Background(), fmt.Sprintf("b%d", i+1), local.Config{KeyFile: p})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}

// drillLogged drills and logs every DEK's verdict.
func drillLogged(t *testing.T, opts recovery.DrillOptions) *recovery.DrillReport {
	t.Helper()
	r, err := recovery.Drill(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.DEKs {
		t.Logf("%s from %v: objects=%d tampered=%v notdrilled=%v working=%d err=%v", d.KeyID, d.From, d.Objects, d.Tampered, d.NotDrilled, d.Working, d.Err)
	}
	return r
}
