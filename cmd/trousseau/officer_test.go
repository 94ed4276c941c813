package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// officerCase is a config of three local backends, 2 of 3, and a
// recovery block of three officers, 2 of 3 (bob's recipient hybrid).
type officerCase struct {
	dir, config, signingKey string
	ids                     map[string]string // identity file by officer
}

func newOfficerCase(t *testing.T) *officerCase {
	t.Helper()
	c := &officerCase{dir: shortTemp(t), ids: map[string]string{}}
	c.signingKey = filepath.Join(c.dir, "signing-key.json")
	var b strings.Builder
	fmt.Fprintf(&b, "stateDir: %s\nthreshold: 2\nbackends:\n", filepath.Join(c.dir, "state"))
	for _, name := range []string{"local-a", "local-b", "local-c"} {
		key := filepath.Join(c.dir, name+".key")
		mustRun(t, "keygen", key)
		fmt.Fprintf(&b, "  - name: %s\n    local: {keyFile: %s}\n", name, key)
	}
	fmt.Fprintf(&b, "recovery:\n  threshold: 2\n  signingKeyFile: %s\n  officers:\n", c.signingKey)
	for _, name := range []string{"alice", "bob", "carol"} {
		c.ids[name] = filepath.Join(c.dir, name+".txt")
		args := []string{"officer", "keygen", "--out", c.ids[name]}
		if name == "bob" {
			args = append(args, "--pq")
		}
		fmt.Fprintf(&b, "    - name: %s\n      recipient: %s\n", name, strings.TrimSpace(mustRun(t, args...)))
	}
	c.config = filepath.Join(c.dir, "config.yaml")
	must(t, os.WriteFile(c.config, []byte(b.String()), 0o600))
	return c
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, "", args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// envelope is an envelope of c's config with its recovery policy, ready.
func (c *officerCase) envelope(t *testing.T) *envelope.Envelope {
	t.Helper()
	cfg, err := config.Load(c.config)
	must(t, err)
	bs, err := cfg.BuildBackends(context.Background())
	must(t, err)
	rec, err := cfg.RecoveryPolicy()
	must(t, err)
	e, err := envelope.New(envelope.Config{Threshold: 2, Backends: bs, Recovery: rec})
	must(t, err)
	must(t, e.Prepare(context.Background()))
	return e
}

// sealedWithPacket makes c's signing key and packet, and seals a seed
// with them; it returns the packet's path and the sealed seed.
func (c *officerCase) sealedWithPacket(t *testing.T) (string, envelope.Sealed) {
	t.Helper()
	mustRun(t, "officer", "signing-key", "--config", c.config, "--out", c.signingKey)
	packet := filepath.Join(c.dir, "packet.json")
	mustRun(t, "officer", "packet", "--config", c.config, "--out", packet)
	s, err := c.envelope(t).Encrypt([]byte("seed"))
	must(t, err)
	return packet, s
}

// storedValue is sealed as kube-apiserver stores a KMS v2 value.
func storedValue(t *testing.T, s envelope.Sealed) []byte {
	b, err := proto.Marshal(&kmstypes.EncryptedObject{EncryptedData: []byte("data"), KeyID: s.KeyID, EncryptedDEKSource: s.Ciphertext,
		EncryptedDEKSourceType: kmstypes.EncryptedDEKSourceType_AES_GCM_KEY, Annotations: map[string][]byte{envelope.SharesAnnotation: s.Header}})
	must(t, err)
	return append([]byte("k8s:enc:kms:v2:trousseau:"), b...)
}

func writeSnapshot(t *testing.T, path string, values map[string][]byte) {
	t.Helper()
	snap, err := recoverytest.NewBoltSnapshot(path)
	must(t, err)
	for k, v := range values {
		must(t, snap.Put(k, v))
	}
	must(t, snap.Close())
}

// TestOfficerRoundTrip: the whole ceremony in-process. Two officers'
// offline unwraps to the operator's recipient, and the operator's
// identity, open a DEK no custodian is asked for; one officer's does
// not; a header signed by another signing key is refused and reported.
func TestOfficerRoundTrip(t *testing.T) {
	c := newOfficerCase(t)
	out := mustRun(t, "officer", "signing-key", "--config", c.config, "--out", c.signingKey)
	if !regexp.MustCompile(`^wrote .*\npublic key: [A-Za-z0-9+/]{43}=\nsigner id: [0-9a-f]{16}\n$`).MatchString(out) {
		t.Fatalf("signing-key output:\n%s", out)
	}
	packet := filepath.Join(c.dir, "packet.json")
	if out := mustRun(t, "officer", "packet", "--config", c.config, "--out", packet, "--text"); !strings.Contains(out, "any 2 of these 3 officers") || !strings.Contains(out, "age1pq1") {
		t.Fatalf("packet --text:\n%s", out)
	}
	secret := []byte("a DEK seed kube-apiserver sealed")
	genuine, err := c.envelope(t).Encrypt(secret)
	must(t, err)

	// The same officers, another signing key: what an etcd writer with
	// keys of their own could plant.
	must(t, os.Rename(c.signingKey, c.signingKey+".genuine"))
	mustRun(t, "officer", "signing-key", "--config", c.config, "--out", c.signingKey)
	planted, err := c.envelope(t).Encrypt([]byte("planted"))
	must(t, err)

	snap := filepath.Join(c.dir, "etcd.snapshot")
	writeSnapshot(t, snap, map[string][]byte{"/registry/secrets/default/db": storedValue(t, genuine), "/registry/secrets/default/planted": storedValue(t, planted)})
	operator := filepath.Join(c.dir, "operator.txt")
	to := strings.TrimSpace(mustRun(t, "officer", "keygen", "--out", operator))
	transfers := map[string]*envelope.ShareTransfer{}
	for _, name := range []string{"alice", "bob"} {
		file := filepath.Join(c.dir, name+"-transfer.json")
		_, errOut, err := run(t, "", "officer", "unwrap", "--identity", c.ids[name], "--to", to, "--etcd-snapshot", snap, "--officer-packet", packet, "--out", file)
		if err != nil || !strings.Contains(errOut, "signature: valid; share of "+name+" opened") || !strings.Contains(errOut, "signature: signed by an unknown key; refused") || !strings.Contains(errOut, "2 headers: 1 opened, 1 refused") {
			t.Fatalf("unwrap by %s: %v\n%s", name, err, errOut)
		}
		t.Logf("unwrap by %s:\n%s", name, errOut)
		if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("transfer file: %v", err)
		}
		transfers[name], err = officers.ReadTransfer(file)
		must(t, err)
		if len(transfers[name].Shares) != 1 || transfers[name].Officer != name {
			t.Fatalf("transfer of %s: %+v", name, transfers[name])
		}
	}
	p, err := officers.ReadPacket(packet)
	must(t, err)
	ids, err := officers.ReadIdentities(operator)
	must(t, err)
	open := func(s envelope.Sealed, ts ...*envelope.ShareTransfer) ([]byte, error) {
		kr, err := envelope.NewOfficerKeyring(envelope.OfficerKeyringConfig{Identities: ids, Trusted: p.TrustedKeys(), Transfers: ts})
		must(t, err)
		return kr.Decrypt(context.Background(), s.Ciphertext, s.Header)
	}
	if got, err := open(genuine, transfers["alice"], transfers["bob"]); err != nil || string(got) != string(secret) {
		t.Fatalf("two officers' transfers: %q %v", got, err)
	}
	if _, err := open(genuine, transfers["alice"]); err == nil {
		t.Fatal("one officer's transfer opened a 2-of-3 DEK")
	}

	accepted := filepath.Join(c.dir, "accepted.json")
	_, errOut, err := run(t, "", "officer", "unwrap", "--identity", c.ids["carol"], "--to", to, "--etcd-snapshot", snap, "--officer-packet", packet, "--accept-unsigned", "--out", accepted)
	if err != nil || !strings.Contains(errOut, "2 headers: 2 opened, 0 refused") {
		t.Fatalf("--accept-unsigned: %v\n%s", err, errOut)
	}
}

func TestOfficerKeygen(t *testing.T) {
	dir := shortTemp(t)
	out, errOut, err := run(t, "", "officer", "keygen", "--pq")
	recipient := strings.TrimPrefix(strings.TrimSpace(errOut), "Public key: ")
	if err != nil || !strings.HasPrefix(recipient, "age1pq1") || !strings.Contains(out, "# public key: "+recipient+"\nAGE-SECRET-KEY-PQ-1") {
		t.Fatalf("keygen to stdout: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	file := filepath.Join(dir, "id.txt")
	out = mustRun(t, "officer", "keygen", "--out", file)
	st, err := os.Stat(file)
	must(t, err)
	ids, err := officers.ReadIdentities(file)
	if err != nil || st.Mode().Perm() != 0o600 || len(ids) != 1 || !strings.HasPrefix(out, "age1") || strings.Contains(out, "SECRET") {
		t.Fatalf("keygen --out: %v %v %q", err, st.Mode(), out)
	}
	before, _ := os.ReadFile(file)
	if _, _, err := run(t, "", "officer", "keygen", "--out", file); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Fatalf("keygen over an identity: %v", err)
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Fatal("keygen changed an existing identity file")
	}
}

func TestOfficerSigningKey(t *testing.T) {
	c := newOfficerCase(t)
	first, errOut, err := run(t, "", "officer", "signing-key", "--config", c.config, "--out", c.signingKey)
	if err != nil || errOut != "" {
		t.Fatalf("at the config's signingKeyFile: %v %q", err, errOut)
	}
	if st, err := os.Stat(c.signingKey); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("signing key file: %v %v", err, st)
	}
	_, _, err = run(t, "", "officer", "signing-key", "--config", c.config, "--out", c.signingKey)
	if err == nil || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "--previous") {
		t.Fatalf("over an existing key: %v", err)
	}
	if again := mustRun(t, "officer", "signing-key", "--config", c.config, "--out", c.signingKey, "--force"); again == first {
		t.Fatal("--force did not make a new key")
	}
	if _, errOut, _ := run(t, "", "officer", "signing-key", "--config", c.config, "--out", filepath.Join(c.dir, "copy.json")); !strings.Contains(errOut, "not the config's recovery.signingKeyFile") {
		t.Errorf("elsewhere than the config says: %q", errOut)
	}
	var key struct{ PublicKey string }
	b, _ := os.ReadFile(c.signingKey)
	must(t, json.Unmarshal(b, &key))
	if raw, err := base64.StdEncoding.DecodeString(key.PublicKey); err != nil || len(raw) != 32 {
		t.Fatalf("file: %s", b)
	}

	// A backend that cannot wrap: no key is made, no file written.
	must(t, os.Remove(filepath.Join(c.dir, "local-c.key")))
	elsewhere := filepath.Join(c.dir, "other.json")
	_, _, err = run(t, "", "officer", "signing-key", "--config", c.config, "--out", elsewhere)
	if err == nil || !strings.Contains(err.Error(), "local-c") {
		t.Fatalf("with a backend down: %v", err)
	}
	if _, err := os.Stat(elsewhere); err == nil {
		t.Fatal("a file was written without every backend")
	}
}

func TestOfficerPacketErrors(t *testing.T) {
	c := newOfficerCase(t)
	packet := filepath.Join(c.dir, "packet.json")
	if _, _, err := run(t, "", "officer", "packet", "--config", c.config, "--out", packet); err == nil || !strings.Contains(err.Error(), "officer signing-key") {
		t.Fatalf("before the signing key: %v", err)
	}
	mustRun(t, "officer", "signing-key", "--config", c.config, "--out", c.signingKey)
	out := mustRun(t, "officer", "packet", "--config", c.config, "--out", packet)
	if !strings.HasPrefix(out, "wrote "+packet+": 2 of 3 officers, 1 signing keys\ntrusts signer id ") || strings.Count(out, "trusts signer id") != 1 {
		t.Fatalf("packet: %q", out)
	}
	bad := filepath.Join(c.dir, "bad.json")
	must(t, os.WriteFile(bad, []byte("{}"), 0o600))
	if _, _, err := run(t, "", "officer", "packet", "--config", c.config, "--out", packet, "--previous", bad); err == nil || !strings.Contains(err.Error(), "--previous: officers' packet "+bad) {
		t.Fatalf("bad --previous: %v", err)
	}
	// Rotated signing key: the new packet keeps the old public key.
	mustRun(t, "officer", "signing-key", "--config", c.config, "--out", c.signingKey, "--force")
	next := filepath.Join(c.dir, "next.json")
	if out := mustRun(t, "officer", "packet", "--config", c.config, "--out", next, "--previous", packet); !strings.Contains(out, "2 signing keys") || !strings.Contains(out, "(carried from "+packet+")") {
		t.Fatalf("packet --previous: %q", out)
	}
}

func TestOfficerUnwrapErrors(t *testing.T) {
	c := newOfficerCase(t)
	packet, s := c.sealedWithPacket(t)
	snap := filepath.Join(c.dir, "etcd.snapshot")
	writeSnapshot(t, snap, map[string][]byte{"/registry/secrets/a/b": storedValue(t, s)})
	to := strings.TrimSpace(mustRun(t, "officer", "keygen", "--out", filepath.Join(c.dir, "operator.txt")))
	stranger := filepath.Join(c.dir, "stranger.txt")
	mustRun(t, "officer", "keygen", "--out", stranger)
	exists := filepath.Join(c.dir, "exists.json")
	must(t, os.WriteFile(exists, nil, 0o600))
	out := filepath.Join(c.dir, "t.json")
	base := []string{"officer", "unwrap", "--identity", c.ids["alice"], "--etcd-snapshot", snap}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no packet":          {[]string{"--to", to, "--out", out}, "give --officer-packet FILE"},
		"bad recipient":      {[]string{"--to", "ssh-ed25519 AAAA", "--officer-packet", packet, "--out", out}, "--to: "},
		"transfer exists":    {[]string{"--to", to, "--officer-packet", packet, "--out", exists}, "never overwritten"},
		"missing flag":       {[]string{"--officer-packet", packet, "--out", out}, `"to" not set`},
		"not this officer's": {[]string{"--to", to, "--officer-packet", packet, "--out", out}, "open no officer's share"},
		"missing snapshot":   {[]string{"--to", to, "--officer-packet", packet, "--out", out, "--etcd-snapshot", filepath.Join(c.dir, "none")}, "none"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append(append([]string{}, base...), tc.args...)
			if name == "not this officer's" {
				args[3] = stranger
			}
			_, errOut, err := run(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q\n%s", err, tc.want, errOut)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a transfer was written")
			}
		})
	}
	_, errOut, err := run(t, "", append(base, "--to", to, "--accept-unsigned", "--out", out)...)
	if err != nil || !strings.Contains(errOut, "signature: not checked; share of alice opened") {
		t.Fatalf("--accept-unsigned with no packet: %v\n%s", err, errOut)
	}
}

// TestOfficerUnwrapAmidJunkHeaders: an etcd writer can store any number
// of headers: junk, the genuine one with other commitments (which only
// the DEK can check), or with its signature changed. The genuine share
// opens once, each header is counted, and the report lists only the
// first of those not unwrapped.
func TestOfficerUnwrapAmidJunkHeaders(t *testing.T) {
	c := newOfficerCase(t)
	packet, s := c.sealedWithPacket(t)
	values := map[string][]byte{"/registry/secrets/a/genuine": storedValue(t, s)}
	variant := func(name string, change func(h []byte)) {
		v := s
		v.Header = bytes.Clone(s.Header)
		change(v.Header)
		values["/registry/secrets/a/"+name] = storedValue(t, v)
	}
	const junk, copies = reportLines + 10, 50
	for i := range junk {
		values[fmt.Sprintf("/registry/secrets/a/junk-%d", i)] = storedValue(t, envelope.Sealed{Ciphertext: []byte("x"), KeyID: "k", Header: fmt.Appendf(nil, "junk header %d", i)})
	}
	for i := range copies {
		variant(fmt.Sprintf("copy-%d", i), func(h []byte) { h[len(h)-1], h[len(h)-2] = byte(i), 0xee })
	}
	variant("resigned", func(h []byte) { h[len(h)-40] ^= 1 }) // in the signature
	snap := filepath.Join(c.dir, "etcd.snapshot")
	writeSnapshot(t, snap, values)
	to := strings.TrimSpace(mustRun(t, "officer", "keygen", "--out", filepath.Join(c.dir, "operator.txt")))
	out := filepath.Join(c.dir, "t.json")
	_, errOut, err := run(t, "", "officer", "unwrap", "--identity", c.ids["alice"], "--to", to, "--etcd-snapshot", snap, "--officer-packet", packet, "--out", out)
	if err != nil || strings.Count(errOut, "signature: valid; share of alice opened\n") != 1 {
		t.Fatalf("unwrap: %v\n%s", err, errOut)
	}
	if n := strings.Count(errOut, "\n"); n != 1+reportLines+3 {
		t.Errorf("%d lines, want the opened header, %d others, two of counts and the file written\n%s", n, reportLines, errOut)
	}
	for _, want := range []string{"11 more headers not listed", "82 headers: 1 opened, 1 refused for their signature, 0 without an officers' branch, 30 unreadable, 50 copies of an opened one with another commitment (skipped)"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("report lacks %q\n%s", want, errOut)
		}
	}
	tr, err := officers.ReadTransfer(out)
	must(t, err)
	if len(tr.Shares) != 1 {
		t.Errorf("%d shares in the transfer, want 1", len(tr.Shares))
	}
}
