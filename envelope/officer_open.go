package envelope

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/fips140"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"filippo.io/age"

	"github.com/trousseau-io/trousseau/split"
)

// ErrRefusedSignature: recovery through the officers refused a header
// whose signature does not verify against the packet's keys.
var ErrRefusedSignature = errors.New("header signature not verified")

// OfficerKeyringConfig says what recovery through the officers may use.
type OfficerKeyringConfig struct {
	// Identities open officers' shares: officers' own identities, and the
	// recovery operator's for [ShareTransfer]s sealed to it.
	Identities []age.Identity
	// Trusted are the signing public keys of the officers' packet.
	Trusted []ed25519.PublicKey
	// AcceptUnsigned opens headers whose signature does not verify; each
	// is reported.
	AcceptUnsigned bool
	Transfers      []*ShareTransfer
}

// OfficerKeyring decrypts through the officers' branch only: no
// custodian is asked. It is safe for concurrent use.
type OfficerKeyring struct {
	cfg       OfficerKeyringConfig
	transfers map[transferKey][][]byte

	mu sync.Mutex
	// opened holds the DEKs opened, by the SHA-256 of their header
	// without its commitment: only genuine shares open, so one part makes
	// one DEK, and a header with another commitment is a forgery.
	opened  map[[32]byte]*officerDEK
	failed  map[[32]byte]*OfficerReport // by the SHA-256 of the header, up to maxOfficerHeaders
	reports []*OfficerReport
}

type transferKey struct {
	dekID [dekIDSize]byte
	index int
}

// OfficerReport is how one DEK did through the officers.
type OfficerReport struct {
	KeyID     string
	Signature Signature
	Officers  int      // m, 0 if the header has no officers' branch
	Threshold int      // k'
	Opened    []string // officers whose share opened, in header order
	Err       error    // why it could not be opened, nil if it was
}

type officerDEK struct {
	d   *dek
	rep *OfficerReport
}

// maxOfficerHeaders bounds the headers remembered that opened nothing;
// past it, each object under a further one tries its header again.
const maxOfficerHeaders = 1 << 16

// NewOfficerKeyring checks cfg.
func NewOfficerKeyring(cfg OfficerKeyringConfig) (*OfficerKeyring, error) {
	if fips140.Enforced() {
		return nil, ErrFIPSOnly
	}
	if len(cfg.Identities) == 0 {
		return nil, errors.New("no officer identity given")
	}
	if len(cfg.Trusted) == 0 && !cfg.AcceptUnsigned {
		return nil, errors.New("no signing public key to check headers against: give the officers' packet")
	}
	k := &OfficerKeyring{cfg: cfg, transfers: map[transferKey][][]byte{}, opened: map[[32]byte]*officerDEK{}, failed: map[[32]byte]*OfficerReport{}}
	for _, t := range cfg.Transfers {
		if err := t.CheckVersion(); err != nil {
			return nil, fmt.Errorf("share transfer of %s: %w", t.Officer, err)
		}
		for _, s := range t.Shares {
			id, err := hex.DecodeString(s.DEKID)
			if err != nil || len(id) != dekIDSize {
				return nil, fmt.Errorf("share transfer of %s: dekID %q is not %d hex bytes", t.Officer, s.DEKID, dekIDSize)
			}
			key := transferKey{[dekIDSize]byte(id), s.Index}
			k.transfers[key] = append(k.transfers[key], s.SealedFileKey)
		}
	}
	return k, nil
}

// Decrypt opens ciphertext under header's DEK, found through the officers.
func (k *OfficerKeyring) Decrypt(ctx context.Context, ciphertext, header []byte) ([]byte, error) {
	if err := checkCiphertext(ciphertext); err != nil {
		return nil, err
	}
	d, rep := k.dekFor(ctx, header)
	if rep.Err != nil {
		return nil, rep.Err
	}
	return d.open(ciphertext)
}

// Report opens header's DEK as Decrypt does, keeping it for the Decrypts
// that follow, and says how that went.
func (k *OfficerKeyring) Report(ctx context.Context, header []byte) OfficerReport {
	_, rep := k.dekFor(ctx, header)
	return *rep
}

func (k *OfficerKeyring) dekFor(ctx context.Context, raw []byte) (*dek, *OfficerReport) {
	k.mu.Lock()
	defer k.mu.Unlock() // one header at a time: age unwraps are fast and local
	sum := sha256.Sum256(raw)
	if rep := k.failed[sum]; rep != nil {
		return nil, rep
	}
	var part [32]byte
	if len(raw) > commitSize {
		part = sha256.Sum256(WithoutCommitment(raw))
		if got := k.opened[part]; got != nil {
			if !bytes.Equal(got.d.header, raw) {
				return nil, &OfficerReport{KeyID: got.rep.KeyID, Err: fmt.Errorf("%w: a header of DEK %s with another commitment than the one its shares fit", ErrInvalid, got.rep.KeyID)}
			}
			return got.d, got.rep
		}
	}
	d, rep := k.open(ctx, raw)
	switch {
	case d != nil:
		k.opened[part] = &officerDEK{d, rep}
	case len(k.failed) < maxOfficerHeaders:
		k.failed[sum] = rep
	default:
		return nil, rep
	}
	k.reports = append(k.reports, rep)
	return d, rep
}

// Reports says how each DEK seen did, in the order first seen.
func (k *OfficerKeyring) Reports() []OfficerReport {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]OfficerReport, len(k.reports))
	for i, r := range k.reports {
		out[i] = *r
	}
	return out
}

// open recovers raw's DEK from the officers' shares the identities open.
func (k *OfficerKeyring) open(ctx context.Context, raw []byte) (*dek, *OfficerReport) {
	rep := &OfficerReport{}
	h, err := ParseHeader(raw)
	if err != nil {
		rep.Err = err
		return nil, rep
	}
	rep.KeyID = h.KeyID()
	rs := h.Recovery
	if rs == nil {
		rep.Err = fmt.Errorf("DEK %s has no officers' branch (made without a recovery policy): only its custodians can open it", rep.KeyID)
		return nil, rep
	}
	rep.Officers, rep.Threshold = len(rs.Shares), rs.Threshold
	rep.Signature = CheckSignature(raw, h, k.cfg.Trusted)
	if rep.Signature != SignatureValid && !k.cfg.AcceptUnsigned {
		rep.Err = fmt.Errorf("%w: DEK %s is %s; refused (anyone with the officers' public recipients can build such a header; --accept-unsigned opens it anyway)", ErrRefusedSignature, rep.KeyID, rep.Signature)
		return nil, rep
	}
	shares, opened := k.openShares(h)
	defer func() {
		for _, s := range shares {
			s.Wipe()
		}
	}()
	rep.Opened = opened
	if len(shares) < rs.Threshold {
		rep.Err = fmt.Errorf("DEK %s needs %d officers' shares, the identities given open %d (%v)", rep.KeyID, rs.Threshold, len(shares), opened)
		return nil, rep
	}
	dec, err := split.Decode(ctx, shares, func(secret []byte) bool { return h.verify(raw, secret) })
	key := dec.Secret
	if err == nil && key == nil {
		err = fmt.Errorf("%w: the officers' shares of DEK %s do not combine to its key", ErrInvalid, rep.KeyID)
	}
	if err != nil {
		rep.Err = err
		return nil, rep
	}
	defer clear(key)
	d, err := newDEK(key, raw, h)
	rep.Err = err
	return d, rep
}

// openShares opens each officer's share sealed in the header that it
// can: with the identities, or with a file key transferred for it. Both
// open the same sealed bytes, so there is at most one share per officer,
// and every one is under the header's signature.
func (k *OfficerKeyring) openShares(h *Header) (shares []split.Share, opened []string) {
	for i, s := range h.Recovery.Shares {
		framed, err := OpenOfficerShare(h, i+1, s.Sealed, k.cfg.Identities)
		for _, sealedKey := range k.transfers[transferKey{h.DEKID, i + 1}] {
			if err == nil {
				break
			}
			framed, err = openTransferred(h, i+1, sealedKey, k.cfg.Identities)
		}
		if err != nil {
			continue
		}
		sh, err := split.Parse(framed, dekSize)
		clear(framed)
		if err == nil && sh.Index == i+1 && sh.Threshold == h.Recovery.Threshold {
			shares, opened = append(shares, sh), append(opened, s.Officer)
		}
	}
	return shares, opened
}

// openTransferred opens the file key sealed to the operator, then with
// it the header's own sealed share at index.
func openTransferred(h *Header, index int, sealedKey []byte, ids []age.Identity) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(sealedKey), ids...)
	if err != nil {
		return nil, err
	}
	key, err := io.ReadAll(io.LimitReader(r, fileKeySize+1))
	defer clear(key)
	if err == nil && len(key) != fileKeySize {
		err = fmt.Errorf("%w: a transferred file key of %d bytes", ErrInvalid, len(key))
	}
	if err != nil {
		return nil, err
	}
	return OpenOfficerShare(h, index, h.Recovery.Shares[index-1].Sealed, []age.Identity{age.NewInjectedFileKeyIdentity(key)})
}

// fileKeySize is the size of an age file key.
const fileKeySize = 16

// ShareTransfer carries one officer's shares, opened on their air-gapped
// machine and sealed again to the recovery operator's recipient, so that
// no officer's identity leaves its officer.
type ShareTransfer struct {
	Version   int                `json:"version"`
	Officer   string             `json:"officer"`
	Recipient string             `json:"recipient"` // the operator's
	Shares    []TransferredShare `json:"shares"`
}

// TransferredShare is one DEK's share in a [ShareTransfer]: the age file
// key of the officer's sealed share in the header, sealed to Recipient.
// It opens that sealed share and nothing else, so a transferred share is
// always the one under the header's signature: one forged by anyone who
// knows the operator's recipient opens nothing.
type TransferredShare struct {
	KeyID         string `json:"keyID"`
	DEKID         string `json:"dekID"` // hex
	Index         int    `json:"index"`
	SealedFileKey []byte `json:"sealedFileKey"`
}

// ShareTransferVersion is the [ShareTransfer] format this build makes
// and reads. Version 1 carried the shares themselves, which nothing tied
// to the signed header; it is refused.
const ShareTransferVersion = 2

// CheckVersion refuses a transfer this build does not read, saying why.
func (t *ShareTransfer) CheckVersion() error {
	switch t.Version {
	case ShareTransferVersion:
		return nil
	case 1:
		return errors.New("version 1, whose shares cannot be checked against the signed header: ask the officer to run `trousseau officer unwrap` again with this build")
	}
	return fmt.Errorf("version %d, this build reads %d", t.Version, ShareTransferVersion)
}

// shareFileKey is the age file key of the officer's share of h at index,
// found with ids, once the share it opens is checked to be that one.
func shareFileKey(h *Header, index int, ids []age.Identity) ([]byte, error) {
	hdr, err := age.ExtractHeader(bytes.NewReader(h.Recovery.Shares[index-1].Sealed))
	if err != nil {
		return nil, err
	}
	key, err := age.DecryptHeader(hdr, ids...)
	if err != nil {
		return nil, err
	}
	framed, err := OpenOfficerShare(h, index, h.Recovery.Shares[index-1].Sealed, []age.Identity{age.NewInjectedFileKeyIdentity(key)})
	clear(framed)
	if err != nil {
		clear(key)
		return nil, err
	}
	return key, nil
}

// TransferShares opens, with an officer's identities, that officer's
// share of each header and seals it to the operator's recipient. Headers
// without a share for those identities are skipped.
func TransferShares(officer string, headers [][]byte, ids []age.Identity, operator string) (*ShareTransfer, error) {
	if fips140.Enforced() {
		return nil, ErrFIPSOnly
	}
	to, err := ParseRecipient(operator)
	if err != nil {
		return nil, fmt.Errorf("operator's recipient: %w", err)
	}
	t := &ShareTransfer{Version: ShareTransferVersion, Officer: officer, Recipient: operator}
	seen := map[string]bool{}
	for _, raw := range headers {
		h, err := ParseHeader(raw)
		if err != nil || h.Recovery == nil || seen[string(raw)] {
			continue
		}
		seen[string(raw)] = true
		for i, s := range h.Recovery.Shares {
			if officer != "" && s.Officer != officer {
				continue
			}
			key, err := shareFileKey(h, i+1, ids)
			if err != nil {
				continue
			}
			sealed, err := ageSeal(key, to)
			clear(key)
			if err != nil {
				return nil, err
			}
			t.Shares = append(t.Shares, TransferredShare{KeyID: h.KeyID(), DEKID: hex.EncodeToString(h.DEKID[:]), Index: i + 1, SealedFileKey: sealed})
			if t.Officer == "" {
				t.Officer = s.Officer
			}
		}
	}
	slices.SortFunc(t.Shares, func(a, b TransferredShare) int {
		return cmp.Or(cmp.Compare(a.DEKID, b.DEKID), cmp.Compare(a.Index, b.Index))
	})
	if len(t.Shares) == 0 {
		return nil, errors.New("the identities open no officer's share of any DEK given")
	}
	return t, nil
}
