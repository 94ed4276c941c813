package envelope

import (
	"bytes"
	"crypto/ed25519"
	"crypto/fips140"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// The officers' branch (docs/recovery.md, "Break glass"): with a
// [Recovery] policy, every header also carries a second, independent
// k'-of-m split of its DEK, each share sealed to one officer's age
// recipient, and an Ed25519 signature by a signing key the custodians
// protect. The plugin never needs the officers; recovery through them
// trusts a header only if the signature verifies.

// Recovery is the officers' policy.
type Recovery struct {
	Threshold int
	Officers  []Officer
	// SigningKey signs every header; the envelope unlocks it with k
	// backends before its first rotation.
	SigningKey *SigningKey
}

// Officer holds one share of the recovery branch offline.
type Officer struct {
	Name      string
	Recipient string // age1... (X25519) or age1pq1... (ML-KEM-768 + X25519)
}

// ParseRecipient reads an officer's age recipient. Only recipients age
// itself implements are accepted: wrapping must need no plugin binary.
func ParseRecipient(s string) (age.Recipient, error) {
	if strings.HasPrefix(s, "age1pq1") {
		return age.ParseHybridRecipient(s)
	}
	r, err := age.ParseX25519Recipient(s)
	switch {
	case err == nil:
		return r, nil
	case !strings.HasPrefix(s, "age1"):
		return nil, fmt.Errorf("%.12s... is not an age recipient (age1... or age1pq1...)", s)
	case strings.Contains(s[len("age1"):], "1"):
		// bech32 data has no "1": this is age1<plugin>1...
		return nil, fmt.Errorf("%.16s... is an age plugin recipient; officers need a native age recipient (age1... from age-keygen, or age1pq1... from age-keygen -pq)", s)
	}
	return nil, err
}

// ErrFIPSOnly: age (X25519, ML-KEM hybrid, ChaCha20-Poly1305) is not an
// approved service, so GODEBUG=fips140=only refuses the officers' branch.
var ErrFIPSOnly = errors.New("the officers' branch seals with age (X25519, ChaCha20-Poly1305), which GODEBUG=fips140=only refuses: run without the recovery block, or without fips140=only")

// Validate checks the policy's shape and every recipient.
func (r *Recovery) Validate() error {
	if fips140.Enforced() {
		return ErrFIPSOnly
	}
	if err := split.ValidateThreshold(r.Threshold, len(r.Officers)); err != nil {
		return fmt.Errorf("recovery: %s", strings.ReplaceAll(err.Error(), "backend", "officer"))
	}
	seen := map[string]bool{}
	for i, o := range r.Officers {
		if err := kmsclients.ValidateName(o.Name); err != nil {
			return fmt.Errorf("recovery.officers[%d].name: %w", i, err)
		}
		if seen[o.Name] {
			return fmt.Errorf("recovery.officers[%d].name: %s is named twice", i, o.Name)
		}
		seen[o.Name] = true
		if _, err := ParseRecipient(o.Recipient); err != nil {
			return fmt.Errorf("recovery.officers[%d].recipient (%s): %w", i, o.Name, err)
		}
	}
	if r.SigningKey == nil {
		return errors.New("recovery: no signing key")
	}
	return nil
}

// OfficerShare is one officer's sealed share, as recorded in a header.
type OfficerShare struct {
	Index       int
	Officer     string
	RecipientID [recipientIDSize]byte // [RecipientID] of the recipient it is sealed to
	Sealed      []byte                // age ciphertext of [officerPlaintext]
}

// RecoverySplit is the officers' part of a version 2 header.
type RecoverySplit struct {
	Threshold int
	Shares    []OfficerShare
	SignerID  [signerIDSize]byte
	Signature [ed25519.SignatureSize]byte
}

const (
	signerIDSize       = 8
	recipientIDSize    = 8
	labelOfficerShare  = "trousseau/v1/officer-share\x00"
	labelSignature     = "trousseau/v1/header-signature\x00"
	maxSealedShareSize = 4096
)

// SignerID names a signing public key in headers: a header says which key
// signed it, so that a packet can list the keys of several rotations.
func SignerID(pub ed25519.PublicKey) [signerIDSize]byte {
	sum := sha256.Sum256(pub)
	return [signerIDSize]byte(sum[:signerIDSize])
}

// RecipientID names an officer's recipient in headers, so that a change
// of recipient is seen (and rotates) and a drill can say whose key each
// share needs.
func RecipientID(recipient string) [recipientIDSize]byte {
	sum := sha256.Sum256([]byte(recipient))
	return [recipientIDSize]byte(sum[:recipientIDSize])
}

// officerPlaintext binds a share to its DEK and its place in the split:
// moved to another header or place, it no longer opens there.
func officerPlaintext(dekID [dekIDSize]byte, index, k, m int, officer string, share []byte) []byte {
	out := make([]byte, 0, len(labelOfficerShare)+dekIDSize+4+len(officer)+len(share))
	out = append(out, labelOfficerShare...)
	out = append(out, dekID[:]...)
	out = append(out, byte(index), byte(k), byte(m), byte(len(officer)))
	out = append(out, officer...)
	return append(out, share...)
}

// sealOfficers splits key for the officers and seals each share.
func sealOfficers(key []byte, h *Header, rec *Recovery, signer ed25519.PrivateKey) (*RecoverySplit, error) {
	m := len(rec.Officers)
	shares, err := split.Split(key, rec.Threshold, m)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range shares {
			s.Wipe()
		}
	}()
	out := &RecoverySplit{Threshold: rec.Threshold, SignerID: SignerID(signer.Public().(ed25519.PublicKey))}
	for i, o := range rec.Officers {
		r, err := ParseRecipient(o.Recipient)
		if err != nil {
			return nil, fmt.Errorf("officer %s: %w", o.Name, err)
		}
		framed := shares[i].Marshal()
		pt := officerPlaintext(h.DEKID, i+1, rec.Threshold, m, o.Name, framed)
		clear(framed)
		sealed, err := ageSeal(pt, r)
		clear(pt)
		if err != nil {
			return nil, fmt.Errorf("officer %s: %w", o.Name, err)
		}
		out.Shares = append(out.Shares, OfficerShare{Index: i + 1, Officer: o.Name, RecipientID: RecipientID(o.Recipient), Sealed: sealed})
	}
	return out, nil
}

func ageSeal(pt []byte, r age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(pt); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// OpenOfficerShare opens one officer's sealed share of h with ids and
// checks that it belongs there. It returns the framed share.
func OpenOfficerShare(h *Header, index int, sealed []byte, ids []age.Identity) ([]byte, error) {
	rs := h.Recovery
	if rs == nil || index < 1 || index > len(rs.Shares) {
		return nil, fmt.Errorf("the header has no officer share %d", index)
	}
	s := rs.Shares[index-1]
	r, err := age.Decrypt(bytes.NewReader(sealed), ids...)
	if err != nil {
		return nil, err
	}
	pt, err := io.ReadAll(io.LimitReader(r, maxSealedShareSize))
	if err != nil {
		return nil, fmt.Errorf("officer %s's share: %w", s.Officer, err)
	}
	defer clear(pt)
	prefix := officerPlaintext(h.DEKID, index, rs.Threshold, len(rs.Shares), s.Officer, nil)
	if !bytes.HasPrefix(pt, prefix) {
		return nil, fmt.Errorf("%w: officer %s's share belongs to another DEK or place", ErrInvalid, s.Officer)
	}
	return bytes.Clone(pt[len(prefix):]), nil
}

// signHeader appends the signature over the body.
func signHeader(raw []byte, key ed25519.PrivateKey) []byte {
	return append(raw, ed25519.Sign(key, signatureMessage(raw))...)
}

func signatureMessage(signed []byte) []byte {
	return append([]byte(labelSignature), signed...)
}

// Signature says how a header's signature checks against trusted keys.
type Signature int

const (
	SignatureValid   Signature = iota // by one of the trusted keys
	SignatureNone                     // a version 1 header, or an all-zero signature
	SignatureUnknown                  // by a key not among the trusted ones
	SignatureInvalid                  // the named key did not sign these bytes
)

func (s Signature) String() string {
	return [...]string{"valid", "unsigned", "signed by an unknown key", "invalid"}[s]
}

// CheckSignature checks the signature of raw, parsed as h, against the
// trusted signing public keys.
func CheckSignature(raw []byte, h *Header, trusted []ed25519.PublicKey) Signature {
	rs := h.Recovery
	if rs == nil || rs.Signature == [ed25519.SignatureSize]byte{} {
		return SignatureNone
	}
	for _, pub := range trusted {
		if SignerID(pub) != rs.SignerID {
			continue
		}
		if ed25519.Verify(pub, signatureMessage(raw[:len(raw)-ed25519.SignatureSize-commitSize]), rs.Signature[:]) {
			return SignatureValid
		}
		return SignatureInvalid
	}
	return SignatureUnknown
}
