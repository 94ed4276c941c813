package officers

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Two key pairs from age-keygen's own help, in its output format (local
// time in the created line).
const (
	keygenX25519 = `# created: 2021-01-02T15:30:45+01:00
# public key: age1lvyvwawkr0mcnnnncaghunadrqkmuf9e6507x9y920xxpp866cnql7dp2z
AGE-SECRET-KEY-1N9JEPW6DWJ0ZQUDX63F5A03GX8QUW7PXDE39N8UYF82VZ9PC8UFS3M7XA9
`
	keygenX25519Recipient = "age1lvyvwawkr0mcnnnncaghunadrqkmuf9e6507x9y920xxpp866cnql7dp2z"
	keygenPQ              = `# created: 2025-11-17T12:15:17+01:00
# public key: age1pq1pd[... 1950 more characters ...]
AGE-SECRET-KEY-PQ-1XXC4XS9DXHZ6TREKQTT3XECY8VNNU7GJ83C3Y49D0GZ3ZUME4JWS6QC3EF
`
)

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opens reports whether ids open a message sealed to recipient.
func opens(t *testing.T, recipient string, ids []age.Identity) bool {
	t.Helper()
	r, err := envelope.ParseRecipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("share"))
	w.Close()
	_, err = age.Decrypt(&buf, ids...)
	return err == nil
}

// TestReadIdentitiesAgeKeygenFiles: files as age-keygen (and -pq) write
// them, one or several keys, are read; what is not an age identity is
// refused naming the file, without echoing the line.
func TestReadIdentitiesAgeKeygenFiles(t *testing.T) {
	ids, err := ReadIdentities(writeTemp(t, "x25519.txt", keygenX25519))
	if err != nil || len(ids) != 1 || !opens(t, keygenX25519Recipient, ids) {
		t.Fatalf("age-keygen file: %v", err)
	}
	ids, err = ReadIdentities(writeTemp(t, "both.txt", keygenX25519+keygenPQ))
	if err != nil || len(ids) != 2 {
		t.Fatalf("two keys: %d %v", len(ids), err)
	}
	pq, ok := ids[1].(*age.HybridIdentity)
	if !ok || !opens(t, pq.Recipient().String(), ids[1:]) || !strings.HasPrefix(pq.Recipient().String(), "age1pq1pd") {
		t.Fatalf("age-keygen -pq key read as %T", ids[1])
	}
	for name, content := range map[string]string{
		"ssh key":    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsecret\n",
		"plugin key": "AGE-PLUGIN-YUBIKEY-1QQQQQQQSECRET\n",
		"empty":      "# created: 2021-01-02T15:30:45+01:00\n",
	} {
		path := writeTemp(t, "bad", content)
		if _, err := ReadIdentities(path); err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestNewIdentity: the file is age-keygen's format, read back by
// ReadIdentities, and opens what is sealed to the recipient returned.
func TestNewIdentity(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	for _, pq := range []bool{false, true} {
		file, recipient, err := NewIdentity(pq, now)
		if err != nil {
			t.Fatal(err)
		}
		want := "# created: 2026-12-07T06:00:00Z\n# public key: " + recipient + "\nAGE-SECRET-KEY-"
		if !strings.HasPrefix(string(file), want) || strings.HasPrefix(recipient, "age1pq1") != pq {
			t.Fatalf("pq=%v:\n%s", pq, file)
		}
		ids, err := ReadIdentities(writeTemp(t, "id.txt", string(file)))
		if err != nil || !opens(t, recipient, ids) {
			t.Fatalf("pq=%v: %v", pq, err)
		}
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(path, []byte("one"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two"), 0o644, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" {
		t.Fatalf("refused write changed the file: %q", b)
	}
	if err := WriteFile(path, []byte("three"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	b, _ := os.ReadFile(path)
	entries, _ := os.ReadDir(filepath.Dir(path))
	if string(b) != "three" || st.Mode().Perm() != 0o600 || len(entries) != 1 {
		t.Fatalf("replace: %q %v, %d entries (a temporary file left?)", b, st.Mode(), len(entries))
	}
}

// signingKeyFile makes a signing key over two local backends, 2 of 2.
func signingKeyFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var bs []kmsclients.Backend
	for _, name := range []string{"local-a", "local-b"} {
		p := filepath.Join(dir, name+".key")
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		b, err := local.New(context.Background(), name, local.Config{KeyFile: p})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	e, err := envelope.New(envelope.Config{Threshold: 2, Backends: bs})
	if err != nil {
		t.Fatal(err)
	}
	key, err := e.MakeSigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := envelope.MarshalSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, "signing-key.json", string(b))
}

func recoveryConfig(keyFile string, k int, recipients ...string) *config.Config {
	r := &config.Recovery{Threshold: k, SigningKeyFile: keyFile}
	for i, rcp := range recipients {
		r.Officers = append(r.Officers, config.Officer{Name: []string{"alice", "bob", "carol"}[i], Recipient: rcp})
	}
	return &config.Config{Recovery: r}
}

func newRecipient(t *testing.T) string {
	_, r, err := NewIdentity(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPacketKeepsPrevious: a packet made with --previous after a change
// of officers and of signing key keeps the old key (old headers verify)
// and the old policy (drill names who holds old shares); with no change
// of policy, no earlier policy is recorded.
func TestPacketKeepsPrevious(t *testing.T) {
	a, b, c := newRecipient(t), newRecipient(t), newRecipient(t)
	key1, key2 := signingKeyFile(t), signingKeyFile(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p1, err := NewPacket(recoveryConfig(key1, 2, a, b, c), t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1path := writeTemp(t, "p1.json", string(must(p1.Marshal())))
	read, err := ReadPacket(p1path)
	if err != nil || len(read.TrustedKeys()) != 1 {
		t.Fatalf("read back: %v", err)
	}
	same, err := NewPacket(recoveryConfig(key1, 2, a, b, c), t0.Add(time.Hour), read)
	if err != nil || len(same.Previous) != 0 || len(same.SigningKeys) != 1 {
		t.Fatalf("same policy and key: %+v %v", same, err)
	}
	d := newRecipient(t)
	p2, err := NewPacket(recoveryConfig(key2, 2, a, b, d), t0.Add(2*time.Hour), read)
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.SigningKeys) != 2 || !p2.SigningKeys[1].PublicKey.Equal(p1.SigningKeys[0].PublicKey) || p2.SigningKeys[0].PublicKey.Equal(p1.SigningKeys[0].PublicKey) {
		t.Fatalf("signing keys: %+v", p2.SigningKeys)
	}
	if len(p2.Previous) != 1 || p2.Previous[0].Officers[2].Recipient != c {
		t.Fatalf("previous policies: %+v", p2.Previous)
	}
	if p2.OfficerFor(envelope.RecipientID(c)) != "carol" || p2.OfficerFor(envelope.RecipientID(d)) != "carol" || p2.OfficerFor(envelope.RecipientID(newRecipient(t))) != "" {
		t.Fatal("OfficerFor does not name officers of the current and earlier policies")
	}
	var text bytes.Buffer
	if err := p2.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"any 2 of these 3 officers", "carol (recipient id", d, c, p2.SigningKeys[1].SignerID, "Earlier policies", "until 2026-01-01T02:00:00Z, any 2 of 3", "  1. This packet holds no secret"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text form lacks %q:\n%s", want, text.String())
		}
	}
}

func TestNewPacketErrors(t *testing.T) {
	if _, err := NewPacket(&config.Config{}, time.Now(), nil); err == nil || !strings.Contains(err.Error(), "no recovery block") {
		t.Errorf("no recovery block: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "none.json")
	if _, err := NewPacket(recoveryConfig(missing, 1, newRecipient(t)), time.Now(), nil); err == nil || !strings.Contains(err.Error(), "trousseau officer signing-key") {
		t.Errorf("no signing key file: %v", err)
	}
}

func TestReadPacketAndTransferErrors(t *testing.T) {
	cases := map[string]struct {
		read    func(string) error
		content string
		want    string
	}{
		"packet not JSON":     {readPacket, "{", "officers' packet"},
		"packet version":      {readPacket, `{"version":9,"signingKeys":[{}]}`, "version 9, this build reads 1"},
		"packet without keys": {readPacket, `{"version":1}`, "holds no signing key"},
		"packet short key":    {readPacket, `{"version":1,"signingKeys":[{"publicKey":"AAAA"}]}`, "signingKeys[0].publicKey is 3 bytes"},
		"transfer version":    {readTransfer, `{"version":3}`, "version 3, this build reads 2"},
		"transfer version 1":  {readTransfer, `{"version":1}`, "version 1, whose shares cannot be checked against the signed header"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := writeTemp(t, "f.json", c.content)
			if err := c.read(path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("%v, want %q", err, c.want)
			}
		})
	}
}

func readPacket(p string) error   { _, err := ReadPacket(p); return err }
func readTransfer(p string) error { _, err := ReadTransfer(p); return err }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
