package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// officerArgs are --officer-packet and one --officer-identity per officer
// index.
func officerArgs(f *recoverytest.OfficerFixture, idx ...int) []string {
	args := []string{"--officer-packet", f.Packet}
	for _, i := range idx {
		args = append(args, "--officer-identity", f.Officers.IdentityFiles[i])
	}
	return args
}

func decodeRecoverSummary(t *testing.T, out string) recoverSummary {
	t.Helper()
	var s recoverSummary
	decodeStrict(t, out, &s)
	return s
}

// Break glass: every custodian's key file gone and no config, two of
// three officers recover every Secret byte for byte.
func TestRecoverThroughOfficersCommand(t *testing.T) {
	f := recoverytest.NewOfficerFixture(t)
	for _, path := range f.Plugin.KeyFiles {
		must(t, os.Remove(path))
	}
	dir := filepath.Join(t.TempDir(), "restore")
	args := append([]string{"recover", "--etcd-snapshot", f.Snapshot, "--out-dir", dir, "-q"}, officerArgs(f, 0, 2)...)
	out, errOut, err := run(t, "", args...)
	if err != nil || !strings.Contains(errOut, "officers 2 of 3, opened alice,carol, signature valid, recovered") {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	for key, want := range f.Want {
		parts := strings.Split(key, "/") // /registry/secrets/NS/NAME
		raw, err := os.ReadFile(filepath.Join(dir, parts[3], "secrets", parts[4]+".yaml"))
		var got corev1.Secret
		if err != nil || yaml.Unmarshal(raw, &got) != nil || !reflect.DeepEqual(got.Data, want.Data) {
			t.Errorf("%s: %v\n%s", key, err, raw)
		}
	}

	out, _, err = run(t, "", append([]string{"recover", "--etcd-snapshot", f.Snapshot, "--dry-run", "-o", "json", "-q"}, officerArgs(f, 1, 2)...)...)
	s := decodeRecoverSummary(t, out)
	if err != nil || s.ExitCode != 0 || s.Decrypted != len(f.Want) || len(s.DEKs) != 2 || len(s.Backends) != 0 {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	for _, d := range s.DEKs {
		o := d.Officers
		if o == nil || !o.Branch || o.Signature != "valid" || o.AcceptedUnsigned || o.Threshold != 2 || o.Officers != 3 || !slices.Equal(o.Opened, []string{"bob", "carol"}) {
			t.Errorf("DEK %+v", d)
		}
	}
}

// Officers who keep their identity: each unwraps on an air-gapped machine
// into a transfer sealed to the operator, who recovers with those.
func TestRecoverThroughOfficersShareTransfers(t *testing.T) {
	f := recoverytest.NewOfficerFixture(t)
	var headers [][]byte
	_, err := recovery.SnapshotFile{Path: f.Snapshot}.Scan(context.Background(), recovery.ScanRequest{Prefix: "/registry", Visit: func(kv recovery.KV) error {
		if h, ok := recovery.StoredHeader(kv.Value); ok {
			headers = append(headers, h)
		}
		return nil
	}})
	must(t, err)
	operator, err := age.GenerateX25519Identity()
	must(t, err)
	dir := t.TempDir()
	opFile := filepath.Join(dir, "operator.age")
	must(t, os.WriteFile(opFile, []byte(operator.String()+"\n"), 0o600))
	args := []string{"recover", "--etcd-snapshot", f.Snapshot, "--dry-run", "-q", "--officer-packet", f.Packet, "--officer-identity", opFile}
	for _, i := range []int{0, 1} {
		ids, err := officers.ReadIdentities(f.Officers.IdentityFiles[i])
		must(t, err)
		tr, err := envelope.TransferShares("", headers, ids, operator.Recipient().String())
		must(t, err)
		b, err := json.Marshal(tr)
		must(t, err)
		path := filepath.Join(dir, f.Officers.Names[i]+".transfer")
		must(t, os.WriteFile(path, b, 0o600))
		args = append(args, "--officer-shares", path)
	}
	if _, errOut, err := run(t, "", args...); err != nil || strings.Count(errOut, "opened alice,bob, signature valid, recovered") != 2 {
		t.Fatalf("%v\n%s", err, errOut)
	}
	// The operator's identity alone opens nothing.
	if _, errOut, err := run(t, "", args[:len(args)-4]...); err == nil || !strings.Contains(errOut, "needs 2 officers' shares, the identities given open 0") {
		t.Fatalf("without transfers: %v\n%s", err, errOut)
	}
}

// An etcd writer's forgery, a tampered header and a DEK with no branch:
// refused, each reported per DEK, exit 1; --accept-unsigned opens the
// forgery and says so.
func TestRecoverThroughOfficersRefusesForgery(t *testing.T) {
	f := recoverytest.NewOfficerFixture(t)
	args := append([]string{"recover", "--etcd-snapshot", f.Attacked, "--dry-run", "-o", "json", "-q"}, officerArgs(f, 0, 1)...)
	out, _, err := run(t, "", args...)
	s := decodeRecoverSummary(t, out)
	bad := len(f.Planted) + len(f.Tampered) + len(f.NoBranch)
	if err == nil || s.ExitCode != 1 || s.Failed != bad || s.Decrypted != len(f.Want) {
		t.Fatalf("%v\n%s", err, out)
	}
	deks := map[string]recoverDEK{}
	for _, d := range s.DEKs {
		if d.KeyID == f.ForgedKeyID || d.KeyID == f.NoBranchKeyID || !d.Recovered {
			deks[d.KeyID+map[bool]string{true: "", false: "/refused"}[d.Recovered]] = d
		}
	}
	forged, noBranch, tampered := deks[f.ForgedKeyID+"/refused"], deks[f.NoBranchKeyID+"/refused"], deks[f.KeyIDs[0]+"/refused"]
	if forged.Officers == nil || forged.Officers.Signature != "unknown-key" || !strings.Contains(forged.Error, "refused") ||
		noBranch.Officers == nil || noBranch.Officers.Branch || tampered.Officers == nil || tampered.Officers.Signature != "invalid" {
		t.Fatalf("per DEK: %+v", s.DEKs)
	}
	refusals := 0
	for _, r := range s.Reasons {
		if strings.Contains(r.Text, "header signature not verified") {
			refusals += r.Count
		}
	}
	if refusals != len(f.Planted)+len(f.Tampered) {
		t.Errorf("reasons %+v", s.Reasons)
	}

	out, _, err = run(t, "", append(args, "--accept-unsigned")...)
	s = decodeRecoverSummary(t, out)
	if s.Decrypted != len(f.Want)+len(f.Planted) {
		t.Fatalf("--accept-unsigned: %v\n%s", err, out)
	}
	for _, d := range s.DEKs {
		if d.KeyID == f.ForgedKeyID && (!d.Recovered || !d.Officers.AcceptedUnsigned) {
			t.Errorf("forged DEK with --accept-unsigned: %+v", d)
		}
	}
	// With --accept-unsigned, the packet may be missing.
	if _, errOut, _ := run(t, "", "recover", "--etcd-snapshot", f.Snapshot, "--dry-run", "--accept-unsigned", "--officer-identity", f.Officers.IdentityFiles[0], "--officer-identity", f.Officers.IdentityFiles[1]); !strings.Contains(errOut, "signature signed by an unknown key: accepted by --accept-unsigned, recovered") {
		t.Errorf("no packet, --accept-unsigned:\n%s", errOut)
	}
}

func TestRecoverOfficerFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "c.yaml", "--officer-identity", "a.age", "--officer-packet", "p.json"}, "--config and --officer-identity are exclusive"},
		{[]string{"--officer-identity", "a.age"}, "--officer-identity needs --officer-packet FILE"},
		{[]string{"--config", "c.yaml", "--officer-packet", "p.json"}, "are for recovery through the officers"},
		{[]string{"--config", "c.yaml", "--accept-unsigned"}, "are for recovery through the officers"},
		{nil, "give --config FILE (recover through the custodians) or --officer-identity FILE"},
		{[]string{"--officer-identity", "missing.age", "--officer-packet", "missing.json"}, "--officer-packet: open missing.json"},
	} {
		_, _, err := run(t, "", append([]string{"recover", "--etcd-snapshot", "s.db", "--dry-run"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
