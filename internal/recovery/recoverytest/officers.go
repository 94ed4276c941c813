package recoverytest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/officers"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Officers are a test's break-glass officers, each with an age identity
// file; the last one's identity is hybrid (post-quantum).
type Officers struct {
	Threshold     int
	Names         []string
	Recipients    []string
	IdentityFiles []string
}

var officerNames = []string{"alice", "bob", "carol", "dave", "erin"}

// NewOfficers makes k-of-m officers (m at most 5).
func NewOfficers(t testing.TB, k, m int) *Officers {
	t.Helper()
	dir := t.TempDir()
	o := &Officers{Threshold: k}
	for i := range m {
		var secret, recipient string
		if i == m-1 {
			id, err := age.GenerateHybridIdentity()
			if err != nil {
				t.Fatal(err)
			}
			secret, recipient = id.String(), id.Recipient().String()
		} else {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				t.Fatal(err)
			}
			secret, recipient = id.String(), id.Recipient().String()
		}
		path := filepath.Join(dir, officerNames[i]+".age")
		if err := os.WriteFile(path, []byte("# public key: "+recipient+"\n"+secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		o.Names, o.Recipients, o.IdentityFiles = append(o.Names, officerNames[i]), append(o.Recipients, recipient), append(o.IdentityFiles, path)
	}
	return o
}

func (o *Officers) list() []envelope.Officer {
	out := make([]envelope.Officer, len(o.Names))
	for i, n := range o.Names {
		out[i] = envelope.Officer{Name: n, Recipient: o.Recipients[i]}
	}
	return out
}

// WritePacket writes the officers' packet, trusting keys, and returns its
// path.
func (o *Officers) WritePacket(t testing.TB, keys ...ed25519.PublicKey) string {
	t.Helper()
	p := &officers.Packet{Version: officers.PacketVersion, Created: time.Now().UTC().Truncate(time.Second), Threshold: o.Threshold}
	for i, n := range o.Names {
		id := envelope.RecipientID(o.Recipients[i])
		p.Officers = append(p.Officers, officers.Officer{Name: n, Recipient: o.Recipients[i], RecipientID: hex.EncodeToString(id[:])})
	}
	for _, k := range keys {
		id := envelope.SignerID(k)
		p.SigningKeys = append(p.SigningKeys, officers.SigningKey{PublicKey: k, SignerID: hex.EncodeToString(id[:]), Created: p.Created})
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "packet.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// StartPluginWithOfficers runs a plugin whose DEKs carry o's branch,
// signed by a key its own backends protect (2 of 3).
func StartPluginWithOfficers(t testing.TB, o *Officers) *Plugin {
	t.Helper()
	return startPlugin(t, func(bs []kmsclients.Backend) *envelope.Recovery {
		signer, err := envelope.New(envelope.Config{Threshold: 2, Backends: bs})
		if err != nil {
			t.Fatal(err)
		}
		key, err := signer.MakeSigningKey(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return &envelope.Recovery{Threshold: o.Threshold, Officers: o.list(), SigningKey: key}
	})
}

// OfficerFixture is a cluster's etcd data, as snapshot files, written
// through a plugin with break-glass officers (2 of 3).
type OfficerFixture struct {
	Officers *Officers
	Plugin   *Plugin
	Packet   string // the officers' packet, trusting the plugin's signing key
	// Snapshot holds the plugin's Secrets only (Want, by etcd key), under
	// two DEKs (KeyIDs: before and after a rotation), in KMS v2 and v1.
	Snapshot string
	Want     map[string]*corev1.Secret
	KeyIDs   []string
	// Attacked is Snapshot plus what an etcd writer added: Planted, under
	// a header it forged (its own DEK, ForgedKeyID, with shares sealed to
	// the officers' public recipients, signed by its own key); Tampered,
	// a genuine value whose header has one byte of an officer's share
	// changed; and NoBranch, under a DEK (NoBranchKeyID) of a plugin with
	// no officers' branch.
	Attacked                    string
	Planted, Tampered, NoBranch []string
	ForgedKeyID, NoBranchKeyID  string
}

// NewOfficerFixture writes the fixture's snapshots; no etcd runs.
func NewOfficerFixture(t testing.TB) *OfficerFixture {
	t.Helper()
	o := NewOfficers(t, 2, 3)
	f := &OfficerFixture{Officers: o, Plugin: StartPluginWithOfficers(t, o), Want: map[string]*corev1.Secret{}}
	f.Packet = o.WritePacket(t, f.Plugin.Recovery.SigningKey.Public)
	w := NewWriter(t, f.Plugin, nil, Provider)
	var genuine [][2]string
	put := func(ns, name string, how Encryption) {
		key := fmt.Sprintf("/registry/secrets/%s/%s", ns, name)
		s := &corev1.Secret{ObjectMeta: meta(ns, name), Data: map[string][]byte{"v": randomBytes(24), "bin": {0, 0xff, '\n'}}}
		genuine = append(genuine, [2]string{key, string(w.Seal(key, Encode(t, s), how))})
		f.Want[key] = s
	}
	f.KeyIDs = append(f.KeyIDs, f.Plugin.Env.KeyID())
	put("default", "db-password", KMSv2)
	put("team-a", "token", KMSv2)
	put("default", "legacy", KMSv1)
	if err := f.Plugin.Env.Rotate(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	f.KeyIDs = append(f.KeyIDs, f.Plugin.Env.KeyID())
	w.NewSeed()
	put("team-b", "after-rotation", KMSv2)
	dir := t.TempDir()
	f.Snapshot = writeSnapshot(t, filepath.Join(dir, "etcd.snapshot"), genuine)
	f.Attacked = writeSnapshot(t, filepath.Join(dir, "attacked.snapshot"), append(genuine, f.attack(t, genuine[0])...))
	return f
}

// attack returns what an etcd writer plants.
func (f *OfficerFixture) attack(t testing.TB, genuine [2]string) [][2]string {
	var out [][2]string
	attacker := StartPluginWithOfficers(t, f.Officers)
	f.ForgedKeyID = attacker.Env.KeyID()
	aw := NewWriter(t, attacker, nil, Provider)
	plain := StartPlugin(t)
	f.NoBranchKeyID = plain.Env.KeyID()
	pw := NewWriter(t, plain, nil, Provider)
	for i := range 2 {
		key := fmt.Sprintf("/registry/secrets/default/planted-%d", i)
		s := &corev1.Secret{ObjectMeta: meta("default", fmt.Sprintf("planted-%d", i)), Data: map[string][]byte{"v": []byte("planted by an etcd writer")}}
		out = append(out, [2]string{key, string(aw.Seal(key, Encode(t, s), KMSv2))})
		f.Planted = append(f.Planted, key)
		key = fmt.Sprintf("/registry/secrets/default/no-branch-%d", i)
		s = &corev1.Secret{ObjectMeta: meta("default", fmt.Sprintf("no-branch-%d", i)), Data: map[string][]byte{"v": []byte("old")}}
		out = append(out, [2]string{key, string(pw.Seal(key, Encode(t, s), KMSv2))})
		f.NoBranch = append(f.NoBranch, key)
	}
	h := v2Header(t, []byte(genuine[1]))
	bad := bytes.Clone(h)
	bad[len(bad)-ed25519.SignatureSize-32-8-5] ^= 1 // in the last officer's sealed share
	key := strings.Replace(genuine[0], "/default/", "/default/tampered-", 1)
	out = append(out, [2]string{key, string(bytes.Replace([]byte(genuine[1]), h, bad, 1))})
	f.Tampered = append(f.Tampered, key)
	return out
}

// v2Header is the Trousseau header of a stored KMS v2 value.
func v2Header(t testing.TB, stored []byte) []byte {
	prefix := "k8s:enc:kms:v2:" + Provider + ":"
	var obj kmstypes.EncryptedObject
	if !bytes.HasPrefix(stored, []byte(prefix)) || proto.Unmarshal(stored[len(prefix):], &obj) != nil {
		t.Fatal("not a KMS v2 value")
	}
	return obj.Annotations[envelope.SharesAnnotation]
}

func writeSnapshot(t testing.TB, path string, records [][2]string) string {
	snap, err := NewBoltSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if err := snap.Put(r[0], []byte(r[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
