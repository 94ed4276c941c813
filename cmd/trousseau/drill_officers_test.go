package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// drillCode runs drill and returns its stdout, its stderr with the
// error it exits with, and its exit status.
func drillCode(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, err := run(t, "", append([]string{"drill", "-q"}, args...)...)
	var ee *exitError
	switch {
	case err == nil:
		return out, errOut, 0
	case errors.As(err, &ee):
		return out, errOut + ee.Error(), ee.code
	}
	t.Fatalf("drill: %v\n%s\n%s", err, out, errOut)
	return "", "", -1
}

// Without identities or custodians: each DEK's signature, who holds each
// share, the margin; what an etcd writer planted fails the drill.
func TestDrillOfficersCommand(t *testing.T) {
	f := recoverytest.NewOfficerFixture(t)
	out, errOut, code := drillCode(t, append([]string{"--etcd-snapshot", f.Snapshot}, officerArgs(f)...)...)
	if code != 0 || strings.Count(out, "alice bob carol  valid      1       -") != 2 || strings.Contains(out, "BACKENDS") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}

	out, errOut, code = drillCode(t, append([]string{"--etcd-snapshot", f.Attacked}, officerArgs(f)...)...)
	for _, want := range []string{f.ForgedKeyID + ": officers: header signature signed by an unknown key", f.NoBranchKeyID + ": officers: no officers' branch",
		"NO OFFICERS' BRANCH", "unknown-key", "invalid"} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q", want)
		}
	}
	if code != 1 || !strings.Contains(errOut, "fails the officers' drill") {
		t.Fatalf("attacked: exit %d\n%s\n%s", code, out, errOut)
	}

	jsonOut, _, code := drillCode(t, append([]string{"--etcd-snapshot", f.Attacked, "-o", "json"}, officerArgs(f)...)...)
	var r drillSchema
	decodeStrict(t, jsonOut, &r)
	problems := map[string]string{}
	for _, d := range r.DEKs {
		if d.Officers == nil {
			t.Fatalf("DEK %s has no officers object", d.KeyID)
		}
		if d.Officers.Problem != "" {
			problems[d.KeyID] = d.Officers.Problem
		}
	}
	if code != 1 || r.ExitCode != 1 || r.Custodians || len(problems) != 3 || problems[f.ForgedKeyID] == "" || problems[f.NoBranchKeyID] == "" {
		t.Fatalf("json: exit %d, problems %v\n%s", code, problems, jsonOut)
	}
}

// With identities the branch is proved; one officer alone opens their
// own share, which is no failure; both custodians and officers at once.
func TestDrillOfficersProveCommand(t *testing.T) {
	f := recoverytest.NewOfficerFixture(t)
	out, _, code := drillCode(t, append([]string{"--etcd-snapshot", f.Snapshot}, officerArgs(f, 0, 2)...)...)
	if code != 0 || strings.Count(out, "alice=opened bob=sealed carol=opened") != 2 || strings.Count(out, "proved") != 2 {
		t.Fatalf("two officers: exit %d\n%s", code, out)
	}
	jsonOut, _, code := drillCode(t, append([]string{"--etcd-snapshot", f.Snapshot, "-o", "json"}, officerArgs(f, 1)...)...)
	var r drillSchema
	decodeStrict(t, jsonOut, &r)
	for _, d := range r.DEKs {
		if o := d.Officers; o.Proof != "partial" || len(o.Opened) != 1 || o.Opened[0] != "bob" || !o.Shares[1].Opened || o.Margin != 1 {
			t.Errorf("one officer: %+v", o)
		}
	}
	if code != 0 {
		t.Fatalf("one officer: exit %d\n%s", code, jsonOut)
	}
	cfg := f.Plugin.WriteConfig(t, recoverytest.Backends...)
	out, _, code = drillCode(t, append([]string{"--etcd-snapshot", f.Snapshot, "--config", cfg}, officerArgs(f, 0, 1)...)...)
	if code != 0 || strings.Count(out, "local-a=ok local-b=ok local-c=ok") != 2 || strings.Count(out, "proved") != 2 {
		t.Fatalf("custodians and officers: exit %d\n%s", code, out)
	}
}

func TestDrillOfficerFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-snapshot", "s.db"}, "give --config FILE (drill the custodians), --officer-packet FILE"},
		{[]string{"--config", "c.yaml", "--officer-identity", "a.age"}, "--officer-identity needs --officer-packet FILE"},
		{[]string{"--officer-packet", "p.json"}, "without --config, say what to drill"},
	} {
		_, _, err := run(t, "", append([]string{"drill"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// Officer names and recipient ids come from headers an etcd writer may
// have forged: the officers' table and JSON show them escaped.
func TestDrillOfficersArePrintedEscaped(t *testing.T) {
	evil := fakeScreen + "\u202e\u009b2J\x7f\n"
	b := &recovery.OfficerBranch{Present: true, Threshold: 2, Signature: envelope.SignatureUnknown,
		Shares: []recovery.OfficerShareCheck{{Index: 1, Officer: evil, RecipientID: evil}, {Index: 2, Officer: "b", Holder: evil, Opened: true}},
		Proof:  &envelope.OfficerReport{Opened: []string{evil}, Err: errors.New(evil)}}
	r := &recovery.DrillReport{DEKs: []recovery.DrilledDEK{{DEKCheck: envelope.DEKCheck{KeyID: evil}, OfficersOnly: true, Officers: b}}}
	var table, js bytes.Buffer
	must(t, writeDrillTable(&table, r, 1))
	must(t, writeDrillJSON(&js, r, 1))
	for name, out := range map[string]string{"table": table.String(), "json": js.String()} {
		for _, bad := range []string{"\x1b", "\u202e", "\u009b", "\x7f"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s holds %q:\n%s", name, bad, out)
			}
		}
	}
	if !strings.Contains(table.String(), `UNKNOWN(\x1b[2J`) {
		t.Errorf("table:\n%s", table.String())
	}
}
