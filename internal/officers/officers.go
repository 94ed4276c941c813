// Package officers reads and writes what the break-glass officers keep
// and exchange: the packet, age identity files and share transfers
// (docs/recovery.md, "Break glass").
package officers

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
)

// PacketVersion is the packet format this build writes and reads.
const PacketVersion = 1

// maxFileSize bounds every file read here: packets, identities, transfers.
const maxFileSize = 16 << 20

// Packet is what each officer keeps offline: the policy, every officer's
// recipient, the signing public keys headers are checked against, and the
// procedure. It holds no secret.
type Packet struct {
	Version   int       `json:"version"`
	Created   time.Time `json:"created"`
	Threshold int       `json:"threshold"`
	Officers  []Officer `json:"officers"`
	// SigningKeys: the current key first, then those of earlier packets
	// (--previous), so that older backups still verify.
	SigningKeys []SigningKey `json:"signingKeys"`
	// Previous keeps earlier policies: who held shares of older DEKs.
	Previous  []Policy `json:"previous,omitempty"`
	Procedure []string `json:"procedure"`
}

// Officer is one officer and their age recipient.
type Officer struct {
	Name        string `json:"name"`
	Recipient   string `json:"recipient"`
	RecipientID string `json:"recipientID"` // hex, as drill shows it
}

// Policy is an earlier threshold and officers' list.
type Policy struct {
	Until     time.Time `json:"until"` // when the next packet replaced it
	Threshold int       `json:"threshold"`
	Officers  []Officer `json:"officers"`
}

// SigningKey is a header signing public key.
type SigningKey struct {
	PublicKey ed25519.PublicKey `json:"publicKey"`
	SignerID  string            `json:"signerID"` // hex, as headers name it
	Created   time.Time         `json:"created"`
}

// procedure is the packet's runbook, short: docs/recovery.md has the rest.
var procedure = []string{
	"This packet holds no secret. Keep it with your age identity, offline; it lets a recovery check that a DEK's header was signed by the cluster.",
	"To recover an etcd snapshot with no custodian: threshold officers each bring their identity (or an `officer unwrap` transfer), and the operator runs: trousseau recover --officer-packet PACKET --officer-identity ID... --etcd-snapshot SNAPSHOT --out-dir DIR",
	"Without giving your identity to anyone: on an air-gapped machine, trousseau officer unwrap --identity ID --officer-packet PACKET --etcd-snapshot SNAPSHOT --to OPERATOR_RECIPIENT --out TRANSFER; the operator, who made OPERATOR_RECIPIENT with trousseau officer keygen, then gives --officer-identity OPERATOR_ID --officer-shares TRANSFER to recover.",
	"Headers that the signing keys below did not sign are refused: anyone who knows the officers' recipients could have built them. --accept-unsigned overrides that; use it only when you know why.",
	"Check, without any identity, that backups are still recoverable through you: trousseau drill --officer-packet PACKET --etcd-snapshot SNAPSHOT.",
}

// NewPacket makes the packet of cfg's recovery block; previous, if set,
// contributes its signing keys and policies.
func NewPacket(cfg *config.Config, now time.Time, previous *Packet) (*Packet, error) {
	rec, err := cfg.RecoveryPolicy()
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errors.New("the config has no recovery block: nothing to put in a packet")
	}
	p := &Packet{Version: PacketVersion, Created: now.UTC().Truncate(time.Second), Threshold: rec.Threshold, Procedure: procedure}
	for _, o := range rec.Officers {
		p.Officers = append(p.Officers, newOfficer(o.Name, o.Recipient))
	}
	key := rec.SigningKey
	p.SigningKeys = []SigningKey{{PublicKey: key.Public, SignerID: signerID(key.Public), Created: key.Created}}
	if previous != nil {
		for _, k := range previous.SigningKeys {
			if !slices.ContainsFunc(p.SigningKeys, func(o SigningKey) bool { return o.PublicKey.Equal(k.PublicKey) }) {
				p.SigningKeys = append(p.SigningKeys, k)
			}
		}
		if !samePolicy(previous.Threshold, previous.Officers, p.Threshold, p.Officers) {
			p.Previous = append(p.Previous, Policy{Until: p.Created, Threshold: previous.Threshold, Officers: previous.Officers})
		}
		p.Previous = append(p.Previous, previous.Previous...)
	}
	return p, nil
}

func newOfficer(name, recipient string) Officer {
	id := envelope.RecipientID(recipient)
	return Officer{Name: name, Recipient: recipient, RecipientID: hex.EncodeToString(id[:])}
}

func signerID(pub ed25519.PublicKey) string {
	id := envelope.SignerID(pub)
	return hex.EncodeToString(id[:])
}

func samePolicy(k1 int, o1 []Officer, k2 int, o2 []Officer) bool {
	return k1 == k2 && slices.EqualFunc(o1, o2, func(a, b Officer) bool { return a.Name == b.Name && a.Recipient == b.Recipient })
}

// TrustedKeys are the packet's signing public keys.
func (p *Packet) TrustedKeys() []ed25519.PublicKey {
	out := make([]ed25519.PublicKey, len(p.SigningKeys))
	for i, k := range p.SigningKeys {
		out[i] = k.PublicKey
	}
	return out
}

// OfficerFor names the officer a header's share is sealed to, from the
// current or an earlier policy; "" if the packet does not know it.
func (p *Packet) OfficerFor(recipientID [8]byte) string {
	want := hex.EncodeToString(recipientID[:])
	for _, list := range append([][]Officer{p.Officers}, previousLists(p.Previous)...) {
		for _, o := range list {
			if o.RecipientID == want {
				return o.Name
			}
		}
	}
	return ""
}

func previousLists(ps []Policy) [][]Officer {
	out := make([][]Officer, len(ps))
	for i, p := range ps {
		out[i] = p.Officers
	}
	return out
}

// Marshal encodes the packet, indented, with a final newline.
func (p *Packet) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	return append(b, '\n'), err
}

// ReadPacket reads and checks a packet file.
func ReadPacket(path string) (*Packet, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var p Packet
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("officers' packet %s: %w", path, err)
	}
	switch {
	case p.Version != PacketVersion:
		return nil, fmt.Errorf("officers' packet %s: version %d, this build reads %d", path, p.Version, PacketVersion)
	case len(p.SigningKeys) == 0:
		return nil, fmt.Errorf("officers' packet %s holds no signing key", path)
	}
	for i, k := range p.SigningKeys {
		if len(k.PublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("officers' packet %s: signingKeys[%d].publicKey is %d bytes, want %d", path, i, len(k.PublicKey), ed25519.PublicKeySize)
		}
	}
	return &p, nil
}

// ReadIdentities reads an age identity file (age-keygen's format, or
// `trousseau officer keygen`'s): native identities only.
func ReadIdentities(path string) ([]age.Identity, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	ids, err := age.ParseIdentities(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return ids, nil
}

// NewIdentity makes an age identity, hybrid post-quantum if pq, and
// returns its file content and its recipient.
func NewIdentity(pq bool, now time.Time) (file []byte, recipient string, err error) {
	var secret string
	if pq {
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			return nil, "", err
		}
		secret, recipient = id.String(), id.Recipient().String()
	} else {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, "", err
		}
		secret, recipient = id.String(), id.Recipient().String()
	}
	file = fmt.Appendf(nil, "# created: %s\n# public key: %s\n%s\n", now.UTC().Format(time.RFC3339), recipient, secret)
	return file, recipient, nil
}

// ReadTransfer reads a share transfer written by `officer unwrap`.
func ReadTransfer(path string) (*envelope.ShareTransfer, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var t envelope.ShareTransfer
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("share transfer %s: %w", path, err)
	}
	if err := t.CheckVersion(); err != nil {
		return nil, fmt.Errorf("share transfer %s: %w", path, err)
	}
	return &t, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err == nil && len(b) > maxFileSize {
		err = fmt.Errorf("%s is larger than %d bytes", path, maxFileSize)
	}
	return b, err
}
