package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/split"
)

// TestNoSecretsInLogsOrErrors drives a debug-level run through creation,
// encryption, cold and warm decryption, a lying backend, tampering, a
// failed rotation and a restart, then searches everything logged, every
// error and the state dir for the DEK, its shares and the plaintext.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	// Unwraps cancelled after a quorum answered may still log: lock the buffer.
	logs := &testutil.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	sw := wrapSwitchable(newLocals(t, 3))
	cfg := Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir, Logger: logger}
	e := mustNew(t, cfg)
	plaintext := []byte("plaintext-canary-7f3a9c1e5b2d4f60")
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	s := mustEncrypt(t, e, plaintext)
	e.lookup.cache.Purge()
	_, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	note(err)
	tampered := bytes.Clone(s.Header)
	tampered[len(tampered)-40] ^= 1
	_, err = e.Decrypt(ctxT(t), s.Ciphertext, tampered)
	note(err)
	sw[0].down.Store(true)
	sw[1].down.Store(true)
	note(e.Rotate(ctxT(t), "test"))
	restarted, _ := New(cfg)
	note(restarted.Prepare(ctxT(t)))
	_, err = restarted.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	note(err)
	sw[0].down.Store(false)
	sw[1].down.Store(false)
	liarCfg := cfg
	liarCfg.Backends = append(asBackends(sw[:2]), liar{sw[2]})
	liarCfg.StateDir = ""
	withLiar, _ := New(liarCfg)
	_, err = withLiar.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	note(err)
	// A drill, with a liar and a backend down, and its report.
	sw[1].down.Store(true)
	check, err := withLiar.Drill(ctxT(t), s.Header)
	note(err)
	for _, sh := range check.Shares {
		note(sh.Err)
	}
	sw[1].down.Store(false)
	// Adoption of a newer DEK made by another node, saved to the state dir.
	peerCfg := cfg
	peerCfg.StateDir = t.TempDir()
	peer := mustNew(t, peerCfg)
	note(peer.Rotate(ctxT(t), "peer"))
	newer := mustEncrypt(t, peer, plaintext)
	_, err = e.Decrypt(ctxT(t), newer.Ciphertext, newer.Header)
	note(err)
	waitKeyID(t, e, newer.KeyID)
	if len(errs) < 3 {
		t.Fatalf("the run should have produced errors to inspect, got %d", len(errs))
	}

	// The secrets: the plaintext, every share wrapped, and the DEK they make.
	var secrets [][]byte
	secrets = append(secrets, plaintext)
	var shares []split.Share
	for _, b := range sw {
		for _, framed := range b.wrapped {
			secrets = append(secrets, framed, framed[3:])
			if sh, err := split.Parse(framed, dekSize); err == nil && len(shares) < 2 && sh.Index > len(shares) {
				shares = append(shares, sh)
			}
		}
	}
	dek, err := split.Combine(shares)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, dek, deriveKey(dek, infoData), deriveKey(dek, infoDataRoot), deriveKey(dek, infoCommitment))

	var haystack bytes.Buffer
	haystack.Write(logs.Bytes())
	for _, err := range errs {
		fmt.Fprintln(&haystack, err.Error())
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			haystack.Write(b)
		}
		return nil
	})
	if len(logs.Bytes()) == 0 {
		t.Fatal("nothing was logged at debug level")
	}
	for _, sec := range secrets {
		for _, form := range [][]byte{sec, []byte(hex.EncodeToString(sec)), []byte(base64.StdEncoding.EncodeToString(sec)), []byte(base64.RawStdEncoding.EncodeToString(sec)), []byte(fmt.Sprint(sec))} {
			if bytes.Contains(haystack.Bytes(), form) {
				t.Fatalf("a secret (%d bytes) appears in logs, errors or state as %q", len(sec), form)
			}
		}
	}
}
