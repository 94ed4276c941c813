package envelope

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/fips140"
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

	mu      sync.Mutex
	byRaw   map[string]*officerDEK
	opened  map[string]string // KeyID of each header opened, by its bytes without the commitment
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

// maxOfficerHeaders bounds the headers remembered; past it, each object
// under a further header opens its header again.
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
	k := &OfficerKeyring{cfg: cfg, transfers: map[transferKey][][]byte{}, byRaw: map[string]*officerDEK{}, opened: map[string]string{}}
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
	if got := k.byRaw[string(raw)]; got != nil {
		return got.d, got.rep
	}
	if rep := k.copyOfOpened(raw); rep != nil {
		return nil, rep
	}
	d, rep := k.open(ctx, raw)
	if len(k.byRaw) < maxOfficerHeaders {
		k.byRaw[string(raw)] = &officerDEK{d, rep}
		k.reports = append(k.reports, rep)
		if d != nil {
			k.opened[string(WithoutCommitment(raw))] = rep.KeyID
		}
	}
	return d, rep
}

// copyOfOpened refuses, with no officer's share opened, a header that
// differs from one opened only in its commitment: the shares under it
// make the DEK that header's commitment fits, so another commitment is a
// forgery, which an etcd writer can make in any number.
func (k *OfficerKeyring) copyOfOpened(raw []byte) *OfficerReport {
	if len(raw) <= commitSize {
		return nil
	}
	keyID, ok := k.opened[string(WithoutCommitment(raw))]
	if !ok {
		return nil
	}
	return &OfficerReport{KeyID: keyID, Err: fmt.Errorf("%w: a header of DEK %s with another commitment than the one its shares fit", ErrInvalid, keyID)}
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
	byOfficer, opened := k.openShares(h)
	defer func() {
		for _, c := range byOfficer {
			for _, s := range c {
				s.Wipe()
			}
		}
	}()
	rep.Opened = opened
	if len(byOfficer) < rs.Threshold {
		rep.Err = fmt.Errorf("DEK %s needs %d officers' shares, the identities given open %d (%v)", rep.KeyID, rs.Threshold, len(byOfficer), opened)
		return nil, rep
	}
	key, err := combineOfficers(ctx, byOfficer, func(secret []byte) bool { return h.verify(raw, secret) })
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

// maxCombinations bounds the choices of one share per officer tried
// when transfers disagree.
const maxCombinations = 256

// combineOfficers finds the secret that fits from one share per officer,
// trying each officer's candidates in turn: anyone can seal a share to
// the operator's public recipient, so a forged transfer must not hide
// the genuine one.
func combineOfficers(ctx context.Context, byOfficer [][]split.Share, fits func([]byte) bool) ([]byte, error) {
	choice := make([]int, len(byOfficer))
	pick := make([]split.Share, len(byOfficer))
	for range maxCombinations {
		for i, c := range byOfficer {
			pick[i] = c[choice[i]]
		}
		dec, err := split.Decode(ctx, pick, fits)
		if err != nil || dec.Secret != nil {
			return dec.Secret, err
		}
		i := 0 // the next choice, odometer-wise
		for ; i < len(choice); i++ {
			if choice[i]++; choice[i] < len(byOfficer[i]) {
				break
			}
			choice[i] = 0
		}
		if i == len(choice) {
			return nil, nil
		}
	}
	return nil, fmt.Errorf("officers' shares disagree in more than %d ways: give fewer share transfers", maxCombinations)
}

// openShares opens every officer's share it can, sealed in the header:
// with the identities, or with the file keys transferred for it. Per
// officer who has one, each distinct share (one, unless an identity
// given opens a share that does not combine).
func (k *OfficerKeyring) openShares(h *Header) (byOfficer [][]split.Share, opened []string) {
	for i, s := range h.Recovery.Shares {
		var found []split.Share
		keep := func(framed []byte) {
			sh, err := split.Parse(framed, dekSize)
			if err == nil && sh.Index == i+1 && sh.Threshold == h.Recovery.Threshold &&
				!slices.ContainsFunc(found, func(o split.Share) bool { return sameShare(o, framed) }) {
				found = append(found, sh)
			}
			clear(framed)
		}
		if framed, err := OpenOfficerShare(h, i+1, s.Sealed, k.cfg.Identities); err == nil {
			keep(framed)
		}
		for _, sealedKey := range k.transfers[transferKey{h.DEKID, i + 1}] {
			if framed, err := openTransferred(h, i+1, sealedKey, k.cfg.Identities); err == nil {
				keep(framed)
			}
		}
		if len(found) > 0 {
			byOfficer, opened = append(byOfficer, found), append(opened, s.Officer)
		}
	}
	return byOfficer, opened
}

// openTransferred opens the file key sealed to the operator, then with
// it the header's own sealed share at index.
func openTransferred(h *Header, index int, sealedKey []byte, ids []age.Identity) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(sealedKey), ids...)
	if err != nil {
		return nil, err
	}
	key, err := io.ReadAll(io.LimitReader(r, fileKeySize+1))
	if err == nil && len(key) != fileKeySize {
		err = fmt.Errorf("%w: a transferred file key of %d bytes", ErrInvalid, len(key))
	}
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return OpenOfficerShare(h, index, h.Recovery.Shares[index-1].Sealed, []age.Identity{fileKey(key)})
}

// fileKeySize is the size of an age file key.
const fileKeySize = 16

// fileKeyRecorder unwraps an age file with ids and keeps its file key.
type fileKeyRecorder struct {
	ids []age.Identity
	key []byte
}

func (r *fileKeyRecorder) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	for _, id := range r.ids {
		k, err := id.Unwrap(stanzas)
		if errors.Is(err, age.ErrIncorrectIdentity) {
			continue
		}
		if err != nil {
			return nil, err
		}
		r.key = bytes.Clone(k)
		return k, nil
	}
	return nil, age.ErrIncorrectIdentity
}

// fileKey opens the one age file whose key it is; any other fails its
// header's MAC.
type fileKey []byte

func (k fileKey) Unwrap([]*age.Stanza) ([]byte, error) { return bytes.Clone(k), nil }

func sameShare(s split.Share, framed []byte) bool {
	m := s.Marshal()
	defer clear(m)
	return bytes.Equal(m, framed)
}

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
			rec := &fileKeyRecorder{ids: ids}
			framed, err := OpenOfficerShare(h, i+1, s.Sealed, []age.Identity{rec})
			if err != nil {
				continue
			}
			clear(framed)
			sealed, err := ageSeal(rec.key, to)
			clear(rec.key)
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
