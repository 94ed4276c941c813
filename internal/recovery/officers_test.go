package recovery_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
	"github.com/trousseau-io/trousseau/internal/testutil"
)

// identities reads the identity files of the officers at idx.
func identities(t testing.TB, o *recoverytest.Officers, idx ...int) []age.Identity {
	t.Helper()
	var out []age.Identity
	for _, i := range idx {
		ids, err := officers.ReadIdentities(o.IdentityFiles[i])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ids...)
	}
	return out
}

func officerKeyring(t testing.TB, packet string, acceptUnsigned bool, ids []age.Identity) *envelope.OfficerKeyring {
	t.Helper()
	p, err := officers.ReadPacket(packet)
	if err != nil {
		t.Fatal(err)
	}
	k, err := envelope.NewOfficerKeyring(envelope.OfficerKeyringConfig{Identities: ids, Trusted: p.TrustedKeys(), AcceptUnsigned: acceptUnsigned})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wantSecrets(f *recoverytest.OfficerFixture) map[string]any {
	out := map[string]any{}
	for k, v := range f.Want {
		out[k] = v
	}
	return out
}

// Every custodian's key file destroyed: any two of three officers recover
// every Secret byte for byte, and the summary says through whom.
func TestRecoverThroughOfficersWithNoCustodian(t *testing.T) {
	recovery.NeedsDataDecryption(t)
	f := recoverytest.NewOfficerFixture(t)
	for _, path := range f.Plugin.KeyFiles {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	for _, pair := range [][]int{{0, 1}, {0, 2}, {1, 2}} {
		kr := officerKeyring(t, f.Packet, false, identities(t, f.Officers, pair...))
		var out bytes.Buffer
		sum := run(t, recovery.Options{Source: recovery.SnapshotFile{Path: f.Snapshot}, Envelope: kr, Sink: recovery.NewStreamSink(&out, recovery.YAML)})
		text := summaryText(sum)
		if !sum.OK() || sum.Decrypted != len(f.Want) || len(sum.DEKs) != 2 {
			t.Fatalf("officers %v:\n%s", pair, text)
		}
		checkObjects(t, splitYAML(t, out.Bytes()), wantSecrets(f))
		names := []string{f.Officers.Names[pair[0]], f.Officers.Names[pair[1]]}
		for _, d := range sum.DEKs {
			if d.Officers == nil || !slices.Equal(d.Officers.Opened, names) || d.Officers.Signature != envelope.SignatureValid || !slices.Contains(f.KeyIDs, d.KeyID) {
				t.Errorf("officers %v: DEK %+v", pair, d)
			}
		}
		if want := "officers 2 of 3, opened " + strings.Join(names, ",") + ", signature valid, recovered"; strings.Count(text, want) != 2 {
			t.Errorf("officers %v: summary lacks %q:\n%s", pair, want, text)
		}
	}
}

// What an etcd writer plants is refused and reported per DEK; the genuine
// objects beside it are recovered. --accept-unsigned opens the forgery,
// and says so.
func TestRecoverThroughOfficersRefusesForgedHeaders(t *testing.T) {
	recovery.NeedsDataDecryption(t)
	f := recoverytest.NewOfficerFixture(t)
	ids := identities(t, f.Officers, 0, 1)
	source := recovery.SnapshotFile{Path: f.Attacked}
	var out bytes.Buffer
	sum := run(t, recovery.Options{Source: source, Envelope: officerKeyring(t, f.Packet, false, ids), Sink: recovery.NewStreamSink(&out, recovery.YAML)})
	text := summaryText(sum)
	bad := len(f.Planted) + len(f.Tampered) + len(f.NoBranch)
	if sum.OK() || sum.Failed != bad || sum.Decrypted != len(f.Want) {
		t.Fatalf("want %d failed, %d decrypted:\n%s", bad, len(f.Want), text)
	}
	checkObjects(t, splitYAML(t, out.Bytes()), wantSecrets(f))
	reasons := map[string]int{}
	for _, r := range sum.Reasons {
		for _, key := range r.Examples {
			switch {
			case slices.Contains(f.Planted, key):
				reasons["planted"]++
				// The refusal itself, not kube-apiserver's wrapping of it.
				if !strings.HasPrefix(r.Text, "header signature not verified") || !strings.Contains(r.Text, "signed by an unknown key; refused") {
					t.Errorf("planted: %s", r.Text)
				}
			case slices.Contains(f.Tampered, key):
				reasons["tampered"]++
				if !strings.Contains(r.Text, "is invalid; refused") {
					t.Errorf("tampered: %s", r.Text)
				}
			case slices.Contains(f.NoBranch, key):
				reasons["no branch"]++
				if !strings.Contains(r.Text, "has no officers' branch") {
					t.Errorf("no branch: %s", r.Text)
				}
			}
		}
	}
	if reasons["planted"] != len(f.Planted) || reasons["tampered"] != len(f.Tampered) || reasons["no branch"] != len(f.NoBranch) {
		t.Errorf("reasons %v:\n%s", reasons, text)
	}
	byKeyID := map[string][]recovery.DEKInfo{}
	for _, d := range sum.DEKs {
		byKeyID[d.KeyID] = append(byKeyID[d.KeyID], d)
	}
	forged := byKeyID[f.ForgedKeyID]
	if len(forged) != 1 || forged[0].Officers.Signature != envelope.SignatureUnknown || !errors.Is(forged[0].Err, envelope.ErrRefusedSignature) {
		t.Errorf("forged DEK: %+v", forged)
	}
	if nb := byKeyID[f.NoBranchKeyID]; len(nb) != 1 || nb[0].Officers.Officers != 0 || nb[0].Err == nil {
		t.Errorf("DEK with no branch: %+v", nb)
	}
	for _, want := range []string{f.ForgedKeyID + ": officers 2 of 3, opened none, signature signed by an unknown key: refused, NOT recovered",
		f.NoBranchKeyID + ": no officers' branch, NOT recovered", "signature invalid: refused, NOT recovered"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}

	// --accept-unsigned: the planted objects open, reported as such.
	sum = run(t, recovery.Options{Source: source, Envelope: officerKeyring(t, f.Packet, true, ids)})
	text = summaryText(sum)
	if sum.Decrypted != len(f.Want)+len(f.Planted) {
		t.Fatalf("with --accept-unsigned:\n%s", text)
	}
	for _, d := range sum.DEKs {
		if d.KeyID == f.ForgedKeyID && (d.Err != nil || !recovery.AcceptedUnsigned(*d.Officers)) {
			t.Errorf("forged DEK with --accept-unsigned: %+v", d)
		}
	}
	if !strings.Contains(text, f.ForgedKeyID+": officers 2 of 3, opened alice,bob, signature signed by an unknown key: accepted by --accept-unsigned, recovered") {
		t.Errorf("summary:\n%s", text)
	}
}

func officerDrill(t testing.TB, f *recoverytest.OfficerFixture, ids []age.Identity) *recovery.OfficerDrill {
	t.Helper()
	p, err := officers.ReadPacket(f.Packet)
	if err != nil {
		t.Fatal(err)
	}
	o := &recovery.OfficerDrill{Trusted: p.TrustedKeys(), Holder: p.OfficerFor}
	if len(ids) > 0 {
		o.Prover = officerKeyring(t, f.Packet, false, ids)
	}
	return o
}

// Without any identity or custodian, a drill reports each DEK's officers'
// branch: its signature, who holds each share, the margin; the forgery,
// the tampered copy and the DEK without a branch fail it.
func TestDrillOfficersWithoutIdentities(t *testing.T) {
	testutil.NeedsAge(t)
	f := recoverytest.NewOfficerFixture(t)
	r, err := recovery.Drill(context.Background(), recovery.DrillOptions{Source: recovery.SnapshotFile{Path: f.Snapshot}, Officers: officerDrill(t, f, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.DEKs) != 2 || r.ExitCode(1) != 0 {
		t.Fatalf("exit %d: %+v", r.ExitCode(1), r.DEKs)
	}
	for _, d := range r.DEKs {
		b := d.Officers
		if !d.OfficersOnly || b == nil || !b.Present || b.Signature != envelope.SignatureValid || b.Margin() != 1 || b.Proof != nil || b.Problem() != "" {
			t.Fatalf("DEK %+v, branch %+v", d, b)
		}
		for i, s := range b.Shares {
			if s.Holder != f.Officers.Names[i] || s.Opened {
				t.Errorf("share %d: %+v", i, s)
			}
		}
	}

	r, err = recovery.Drill(context.Background(), recovery.DrillOptions{Source: recovery.SnapshotFile{Path: f.Attacked}, Officers: officerDrill(t, f, nil)})
	if err != nil {
		t.Fatal(err)
	}
	problems := map[string]string{}
	for _, d := range r.DEKs {
		if p := d.Officers.Problem(); p != "" {
			problems[d.KeyID] = p
		}
	}
	if r.ExitCode(1) != 1 || len(problems) != 3 || !strings.Contains(problems[f.ForgedKeyID], "signed by an unknown key") ||
		!strings.Contains(problems[f.NoBranchKeyID], "no officers' branch") || !strings.Contains(problems[f.KeyIDs[0]], "signature invalid") {
		t.Fatalf("exit %d, problems %v", r.ExitCode(1), problems)
	}
}

// With identities, the drill proves the branch: two officers' shares
// open and combine to each DEK; one officer alone opens their share
// (no failure); a packet that does not know an officer flags that share.
func TestDrillOfficersProves(t *testing.T) {
	testutil.NeedsAge(t)
	f := recoverytest.NewOfficerFixture(t)
	source := recovery.SnapshotFile{Path: f.Snapshot}
	drill := func(o *recovery.OfficerDrill) *recovery.DrillReport {
		t.Helper()
		r, err := recovery.Drill(context.Background(), recovery.DrillOptions{Source: source, Officers: o})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := drill(officerDrill(t, f, identities(t, f.Officers, 0, 2)))
	for _, d := range r.DEKs {
		b := d.Officers
		if b.Proof == nil || b.Proof.Err != nil || !b.Shares[0].Opened || b.Shares[1].Opened || !b.Shares[2].Opened {
			t.Fatalf("two officers: %+v", b)
		}
	}
	r = drill(officerDrill(t, f, identities(t, f.Officers, 1)))
	for _, d := range r.DEKs {
		if b := d.Officers; b.Proof == nil || !slices.Equal(b.Proof.Opened, []string{"bob"}) || b.Problem() != "" {
			t.Fatalf("one officer: %+v", b)
		}
	}
	if r.ExitCode(1) != 0 {
		t.Fatalf("one officer: exit %d", r.ExitCode(1))
	}
	o := officerDrill(t, f, nil)
	o.Holder = func(id [8]byte) string {
		if id == envelope.RecipientID(f.Officers.Recipients[2]) {
			return ""
		}
		return "known"
	}
	r = drill(o)
	if b := r.DEKs[0].Officers; b.Shares[2].Holder != "" || b.Margin() != 0 || r.ExitCode(1) != 0 {
		t.Fatalf("unknown recipient: exit %d, %+v", r.ExitCode(1), b)
	}
}

// Custodians and officers drilled together: each DEK gets both verdicts.
func TestDrillCustodiansAndOfficers(t *testing.T) {
	testutil.NeedsAge(t)
	f := recoverytest.NewOfficerFixture(t)
	kr := openKeyring(t, f.Plugin.WriteConfig(t, recoverytest.Backends...))
	r, err := recovery.Drill(context.Background(), recovery.DrillOptions{Source: recovery.SnapshotFile{Path: f.Snapshot}, Envelope: kr.Envelope, Officers: officerDrill(t, f, nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.DEKs {
		if d.OfficersOnly || d.Margin() != 1 || d.Officers == nil || d.Officers.Margin() != 1 {
			t.Fatalf("DEK %+v", d)
		}
	}
	if r.ExitCode(1) != 0 {
		t.Fatalf("exit %d", r.ExitCode(1))
	}
}

// The summary says, per DEK, how its signature stood and whether
// --accept-unsigned let it through.
func TestSummarySaysSignatureVerdicts(t *testing.T) {
	refused := envelope.OfficerReport{Officers: 3, Threshold: 2, Signature: envelope.SignatureNone, Err: envelope.ErrRefusedSignature}
	accepted := envelope.OfficerReport{Officers: 3, Threshold: 2, Signature: envelope.SignatureNone, Opened: []string{"a", "b"}}
	noBranch := envelope.OfficerReport{Err: errors.New("no branch")}
	s := &recovery.Summary{DEKs: []recovery.DEKInfo{
		{KeyID: "k1", Officers: &refused, Err: &recovery.OfficerError{Report: refused}},
		{KeyID: "k2", Officers: &accepted},
		{KeyID: "k3", Officers: &noBranch, Err: &recovery.OfficerError{Report: noBranch}},
	}}
	text := summaryText(s)
	for _, want := range []string{
		"k1: officers 2 of 3, opened none, signature unsigned: refused, NOT recovered",
		"k2: officers 2 of 3, opened a,b, signature unsigned: accepted by --accept-unsigned, recovered",
		"k3: no officers' branch, NOT recovered",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %q:\n%s", want, text)
		}
	}
	if recovery.AcceptedUnsigned(refused) || !recovery.AcceptedUnsigned(accepted) || recovery.AcceptedUnsigned(noBranch) {
		t.Error("AcceptedUnsigned")
	}
	for s, want := range map[envelope.Signature]string{envelope.SignatureValid: "valid", envelope.SignatureNone: "unsigned", envelope.SignatureUnknown: "unknown-key", envelope.SignatureInvalid: "invalid"} {
		if got := recovery.SignatureName(s); got != want {
			t.Errorf("SignatureName(%v) = %s", s, got)
		}
	}
}
