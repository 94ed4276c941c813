package grpcserver_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// The recovery branch's margin shows in /readyz (and so in `trousseau
// status`) and in metrics, beside the custodians'.
func TestOfficerBranchShows(t *testing.T) {
	testutil.NeedsAge(t)
	h := newHarness(t)
	sk := h.withOfficers()
	h.start()
	h.probe()
	signer := envelope.SignerID(sk.Public)
	_, body := get(t, "http://"+h.plugin.HTTPAddr()+"/readyz")
	if want := fmt.Sprintf("recovery branch: 2 of 3 officers (margin 1), headers signed by %x", signer); !strings.Contains(body, want) {
		t.Fatalf("/readyz lacks %q:\n%s", want, body)
	}
	_, metrics := get(t, "http://"+h.plugin.HTTPAddr()+"/metrics")
	if !strings.Contains(metrics, "trousseau_dek_officer_margin{key_id_hash=") || !strings.Contains(metrics, "} 1\n") {
		t.Fatalf("no officer margin in metrics")
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "trousseau_dek_officer_margin{") && !strings.HasSuffix(line, " 1") {
			t.Fatalf("officer margin: %s", line)
		}
	}
}

// Without a policy there is no branch to show, and no series.
func TestNoOfficerBranchShowsNothing(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.probe()
	_, body := get(t, "http://"+h.plugin.HTTPAddr()+"/readyz")
	_, metrics := get(t, "http://"+h.plugin.HTTPAddr()+"/metrics")
	if strings.Contains(body, "recovery branch") || strings.Contains(metrics, "trousseau_dek_officer_margin{") {
		t.Fatalf("a branch shows without a policy:\n%s", body)
	}
}

// withOfficers gives h's envelope a 2-of-3 officers' policy, its signing
// key wrapped by h's key files, and returns the key.
func (h *harness) withOfficers() *envelope.SigningKey {
	t := h.t
	var backends []kmsclients.Backend
	for i := range h.keys {
		backends = append(backends, h.localBackend(i))
	}
	maker, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := maker.MakeSigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h.recovery = &envelope.Recovery{Threshold: 2, SigningKey: sk}
	for i, name := range []string{"ana", "bo", "cy"} {
		var recipient string
		if i == 2 {
			id, _ := age.GenerateHybridIdentity()
			recipient = id.Recipient().String()
		} else {
			id, _ := age.GenerateX25519Identity()
			recipient = id.Recipient().String()
		}
		h.recovery.Officers = append(h.recovery.Officers, envelope.Officer{Name: name, Recipient: recipient})
	}
	return sk
}
