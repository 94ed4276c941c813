package envelope

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// The header: everything needed to recover a DEK from a quorum of
// backends, and nothing that helps without one. Version 1, big-endian:
//
//	magic "TRSH" | version 1 | k u8 | n u8 | generation u32 | created unix-seconds i64 | dek id [16]
//	n times: index u8 | len u8, backend name | len u16, key identity | len u16, wrapped share
//	commitment [32] = HMAC-SHA256(HKDF(DEK, "commitment"), every byte before it)
//
// The commitment tells a right DEK from a wrong one (a lying backend, a
// tampered share) and authenticates the whole header: a changed byte
// anywhere makes it fail.
//
// Version 2, made only with a [Recovery] policy (officers.go), adds after
// the shares, and before the commitment:
//
//	k' u8 | m u8 | m times: index u8 | len u8, officer name | recipient id [8] | len u16, sealed share
//	signer id [8] | Ed25519 signature [64] over label | every byte before it
//
// The commitment covers the signature too: a header whose signature was
// changed is another header, which no DEK opens.
const (
	headerMagic   = "TRSH"
	headerVersion = 1
	headerV2      = 2
	dekIDSize     = 16
	dekSize       = 32
	commitSize    = sha256.Size
	headerFixed   = len(headerMagic) + 1 + 1 + 1 + 4 + 8 + dekIDSize

	// MaxHeaderSize fits KMS v2's 32 KiB annotation limit, key included.
	MaxHeaderSize = 32*1024 - 64

	// SharesAnnotation carries the header in every EncryptedObject.
	SharesAnnotation = "shares.trousseau.io"
)

// The ciphertext: what the header's DEK sealed. Version 3:
//
//	version 3 | salt [24] | nonce [12] | AES-256-GCM(HKDF(root, salt, "trousseau/v3/message"), nonce, plaintext, aad)
//	root = HKDF(DEK, "trousseau/v2/data-root"); aad = "trousseau/v1/data" 0x00 | SHA-256(header)
//
// Each message has a key of its own, so the number of messages per DEK
// has no bearing on nonce collisions; the nonce is made inside the Go
// FIPS 140-3 module (cipher.NewGCMWithRandomNonce), which is how
// GODEBUG=fips140=only accepts AES-GCM encryption.
//
// Still read: version 2 (salt [24], then the same with
// "trousseau/v2/message" and a zero nonce) and version 1 (nonce [12], then
// AES-256-GCM under HKDF(DEK, "trousseau/v1/data")). Decryption with any
// nonce is an approved service of the module, so FIPS-only mode reads
// them too.
const (
	ciphertextVersion1 = 1
	ciphertextVersion2 = 2
	ciphertextVersion  = 3
	nonceSize          = 12
	saltSize           = 24
	tagSize            = 16
	ciphertextOverhead = 1 + saltSize + nonceSize + tagSize
	// MaxPlaintextSize keeps ciphertexts well under KMS v2's 1024 bytes;
	// kube-apiserver sends 32.
	MaxPlaintextSize  = 512
	MaxCiphertextSize = MaxPlaintextSize + ciphertextOverhead // [Envelope.Encrypt]'s largest
)

// Labels for HKDF and associated data; changing one breaks every stored object.
const (
	infoData       = "trousseau/v1/data"
	infoDataRoot   = "trousseau/v2/data-root"
	infoMessage2   = "trousseau/v2/message"
	infoMessage    = "trousseau/v3/message"
	infoCommitment = "trousseau/v1/commitment"
	aadShare       = "trousseau/v1/share\x00"
	aadData        = "trousseau/v1/data\x00"
)

// ErrInvalid: malformed, tampered with, or not Trousseau's; never because
// backends are down.
var ErrInvalid = errors.New("invalid or tampered ciphertext")

// WrappedShare is one backend's protected share, as recorded in a header.
type WrappedShare struct {
	Index       int
	Backend     string
	KeyIdentity string
	Wrapped     []byte
}

// Header describes one DEK: its threshold, generation and wrapped shares.
type Header struct {
	Threshold  int
	Generation uint32
	Created    time.Time
	DEKID      [dekIDSize]byte
	Shares     []WrappedShare
	// Recovery is the officers' branch; nil in version 1 headers.
	Recovery   *RecoverySplit
	commitment [commitSize]byte
}

// WithoutCommitment is a parsed header without its commitment: all that
// can be checked of it without its DEK. Copies of one header that differ
// only there have one.
func WithoutCommitment(raw []byte) []byte { return raw[:len(raw)-commitSize] }

// KeyID names the DEK for kube-apiserver: from the header alone, so the
// same after a restart and on every node; the random DEK id keeps it
// unique if the state is lost.
func (h *Header) KeyID() string {
	sum := sha256.New()
	for _, s := range h.Shares {
		fmt.Fprintf(sum, "%d\x00%s\x00%s\x00", s.Index, s.Backend, s.KeyIdentity)
	}
	return fmt.Sprintf("trousseau-v1-g%d-%dof%d-%s-%s",
		h.Generation, h.Threshold, len(h.Shares), hex.EncodeToString(h.DEKID[:12]), hex.EncodeToString(sum.Sum(nil)[:6]))
}

// shareAAD binds a wrapped share to its DEK and its place in the split.
func (h *Header) shareAAD(index, n int) []byte {
	aad := make([]byte, 0, len(aadShare)+dekIDSize+3)
	aad = append(aad, aadShare...)
	aad = append(aad, h.DEKID[:]...)
	return append(aad, byte(index), byte(h.Threshold), byte(n))
}

// marshalBody encodes everything but the commitment.
func (h *Header) marshalBody() ([]byte, error) {
	if err := split.ValidateThreshold(h.Threshold, len(h.Shares)); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(headerMagic)
	b.WriteByte(h.version())
	b.WriteByte(byte(h.Threshold))
	b.WriteByte(byte(len(h.Shares)))
	b.Write(binary.BigEndian.AppendUint32(nil, h.Generation))
	b.Write(binary.BigEndian.AppendUint64(nil, uint64(h.Created.Unix())))
	b.Write(h.DEKID[:])
	for i, s := range h.Shares {
		if s.Index != i+1 {
			return nil, fmt.Errorf("share %d has index %d", i+1, s.Index)
		}
		if err := kmsclients.ValidateName(s.Backend); err != nil {
			return nil, err
		}
		if err := kmsclients.CheckWrapped(kmsclients.Wrapped{Ciphertext: s.Wrapped, KeyIdentity: s.KeyIdentity}); err != nil {
			return nil, fmt.Errorf("backend %s: %w", s.Backend, err)
		}
		b.WriteByte(byte(s.Index))
		b.WriteByte(byte(len(s.Backend)))
		b.WriteString(s.Backend)
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(s.KeyIdentity))))
		b.WriteString(s.KeyIdentity)
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(s.Wrapped))))
		b.Write(s.Wrapped)
	}
	if rs := h.Recovery; rs != nil {
		if err := split.ValidateThreshold(rs.Threshold, len(rs.Shares)); err != nil {
			return nil, fmt.Errorf("recovery: %w", err)
		}
		b.WriteByte(byte(rs.Threshold))
		b.WriteByte(byte(len(rs.Shares)))
		for i, s := range rs.Shares {
			if s.Index != i+1 || len(s.Sealed) > maxSealedShareSize {
				return nil, fmt.Errorf("officer share %d: index %d, %d bytes", i+1, s.Index, len(s.Sealed))
			}
			b.WriteByte(byte(s.Index))
			b.WriteByte(byte(len(s.Officer)))
			b.WriteString(s.Officer)
			b.Write(s.RecipientID[:])
			b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(s.Sealed))))
			b.Write(s.Sealed)
		}
		b.Write(rs.SignerID[:])
	}
	if size := b.Len() + h.trailerSize(); size > MaxHeaderSize {
		return nil, fmt.Errorf("header would be %d bytes, over the limit of %d: the backends' wrapped shares or the officers' sealed shares are too large", size, MaxHeaderSize)
	}
	return b.Bytes(), nil
}

func (h *Header) version() byte {
	if h.Recovery != nil {
		return headerV2
	}
	return headerVersion
}

// trailerSize is what follows the body: in version 2 the signature, then
// the commitment.
func (h *Header) trailerSize() int {
	if h.Recovery != nil {
		return commitSize + ed25519.SignatureSize
	}
	return commitSize
}

// seal computes the commitment under dek and returns the encoded header,
// signed by signer in version 2.
func (h *Header) seal(dek []byte, signer ed25519.PrivateKey) ([]byte, error) {
	body, err := h.marshalBody()
	if err != nil {
		return nil, err
	}
	raw := body
	if h.Recovery != nil {
		raw = signHeader(raw, signer)
		copy(h.Recovery.Signature[:], raw[len(body):])
	}
	mac := commitment(dek, raw)
	copy(h.commitment[:], mac)
	return append(raw, mac...), nil
}

func commitment(dek, body []byte) []byte {
	key := deriveKey(dek, infoCommitment)
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

func deriveKey(dek []byte, info string) []byte {
	key, err := hkdf.Key(sha256.New, dek, nil, info, 32)
	if err != nil {
		panic("hkdf: " + err.Error()) // only for lengths out of range, which are constants here
	}
	return key
}

// reader decodes with bounds checks; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: header truncated in %s", ErrInvalid, what)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8(what string) int {
	b := r.take(1, what)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16(what string) int {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

// ParseHeader checks structure and bounds only; the commitment needs the
// DEK.
func ParseHeader(raw []byte) (*Header, error) {
	if len(raw) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header is %d bytes, over the limit of %d", ErrInvalid, len(raw), MaxHeaderSize)
	}
	if len(raw) < headerFixed+commitSize {
		return nil, fmt.Errorf("%w: header too short (%d bytes)", ErrInvalid, len(raw))
	}
	if string(raw[:len(headerMagic)]) != headerMagic {
		return nil, fmt.Errorf("%w: not a Trousseau header", ErrInvalid)
	}
	version := raw[len(headerMagic)]
	trailer := commitSize
	switch version {
	case headerVersion:
	case headerV2:
		trailer += ed25519.SignatureSize
		if len(raw) < headerFixed+trailer+2+signerIDSize {
			return nil, fmt.Errorf("%w: header too short (%d bytes)", ErrInvalid, len(raw))
		}
	default:
		return nil, fmt.Errorf("%w: unknown header version %d", ErrInvalid, version)
	}
	r := &reader{b: raw[len(headerMagic)+1 : len(raw)-trailer]}
	h := &Header{Threshold: r.u8("threshold")}
	n := r.u8("share count")
	if err := split.ValidateThreshold(h.Threshold, n); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if b := r.take(4+8, "generation"); b != nil {
		h.Generation = binary.BigEndian.Uint32(b)
		h.Created = time.Unix(int64(binary.BigEndian.Uint64(b[4:])), 0).UTC()
	}
	copy(h.DEKID[:], r.take(dekIDSize, "dek id"))
	seen := map[string]bool{}
	for i := 1; i <= n && r.err == nil; i++ {
		s := WrappedShare{Index: r.u8("share index")}
		s.Backend = string(r.take(r.u8("name length"), "backend name"))
		s.KeyIdentity = string(r.take(r.u16("key identity length"), "key identity"))
		s.Wrapped = bytes.Clone(r.take(r.u16("wrapped length"), "wrapped share"))
		if r.err != nil {
			break
		}
		if s.Index != i {
			return nil, fmt.Errorf("%w: share %d has index %d", ErrInvalid, i, s.Index)
		}
		if err := kmsclients.ValidateName(s.Backend); err != nil {
			return nil, fmt.Errorf("%w: share %d: %v", ErrInvalid, i, err)
		}
		if seen[s.Backend] {
			return nil, fmt.Errorf("%w: backend %s named twice", ErrInvalid, s.Backend)
		}
		seen[s.Backend] = true
		if err := kmsclients.CheckWrapped(kmsclients.Wrapped{Ciphertext: s.Wrapped, KeyIdentity: s.KeyIdentity}); err != nil {
			return nil, fmt.Errorf("%w: share %d: %v", ErrInvalid, i, err)
		}
		h.Shares = append(h.Shares, s)
	}
	if version == headerV2 && r.err == nil {
		h.Recovery = parseRecoverySplit(r)
		if rs := h.Recovery; rs != nil {
			copy(rs.Signature[:], raw[len(raw)-trailer:])
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes in header", ErrInvalid, len(r.b))
	}
	copy(h.commitment[:], raw[len(raw)-commitSize:])
	return h, nil
}

// parseRecoverySplit reads version 2's officers' part.
func parseRecoverySplit(r *reader) *RecoverySplit {
	rs := &RecoverySplit{Threshold: r.u8("officer threshold")}
	m := r.u8("officer count")
	if r.err == nil {
		if err := split.ValidateThreshold(rs.Threshold, m); err != nil {
			r.err = fmt.Errorf("%w: officers: %v", ErrInvalid, err)
		}
	}
	seen := map[string]bool{}
	for i := 1; i <= m && r.err == nil; i++ {
		s := OfficerShare{Index: r.u8("officer share index")}
		s.Officer = string(r.take(r.u8("officer name length"), "officer name"))
		copy(s.RecipientID[:], r.take(recipientIDSize, "recipient id"))
		s.Sealed = bytes.Clone(r.take(r.u16("sealed share length"), "sealed share"))
		switch {
		case r.err != nil:
		case s.Index != i:
			r.err = fmt.Errorf("%w: officer share %d has index %d", ErrInvalid, i, s.Index)
		case kmsclients.ValidateName(s.Officer) != nil:
			r.err = fmt.Errorf("%w: officer share %d: %v", ErrInvalid, i, kmsclients.ValidateName(s.Officer))
		case seen[s.Officer]:
			r.err = fmt.Errorf("%w: officer %s named twice", ErrInvalid, s.Officer)
		case len(s.Sealed) == 0 || len(s.Sealed) > maxSealedShareSize:
			r.err = fmt.Errorf("%w: officer share %d is %d bytes", ErrInvalid, i, len(s.Sealed))
		}
		seen[s.Officer] = true
		rs.Shares = append(rs.Shares, s)
	}
	copy(rs.SignerID[:], r.take(signerIDSize, "signer id"))
	if r.err != nil {
		return nil
	}
	return rs
}

// verify reports whether dek is the key h, parsed from raw, commits to.
func (h *Header) verify(raw, dek []byte) bool {
	want := commitment(dek, raw[:len(raw)-commitSize])
	return hmac.Equal(want, h.commitment[:])
}

// Combined is the form used where there is no room for annotations (the KMS
// v1 API): the header and the ciphertext in one blob.
//
//	magic "TRS1" | header length u32 | header | ciphertext
const combinedMagic = "TRS1"

// MarshalCombined joins a header and a ciphertext.
func MarshalCombined(header, ciphertext []byte) []byte {
	out := make([]byte, 0, len(combinedMagic)+4+len(header)+len(ciphertext))
	out = append(out, combinedMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(header)))
	out = append(out, header...)
	return append(out, ciphertext...)
}

// ParseCombined splits what MarshalCombined joined.
func ParseCombined(b []byte) (header, ciphertext []byte, err error) {
	if len(b) < len(combinedMagic)+4 || string(b[:len(combinedMagic)]) != combinedMagic {
		return nil, nil, fmt.Errorf("%w: not a Trousseau v1 ciphertext", ErrInvalid)
	}
	n := binary.BigEndian.Uint32(b[len(combinedMagic):])
	rest := b[len(combinedMagic)+4:]
	if uint64(n) > uint64(len(rest)) || n > MaxHeaderSize {
		return nil, nil, fmt.Errorf("%w: header length %d out of range", ErrInvalid, n)
	}
	return rest[:n], rest[n:], nil
}

// checkCiphertext checks the shape before any key is looked up.
func checkCiphertext(ct []byte) error {
	if len(ct) == 0 {
		return fmt.Errorf("%w: empty ciphertext", ErrInvalid)
	}
	overhead := ciphertextOverhead
	switch ct[0] {
	case ciphertextVersion:
	case ciphertextVersion2:
		overhead = 1 + saltSize + tagSize
	case ciphertextVersion1:
		overhead = 1 + nonceSize + tagSize
	default:
		return fmt.Errorf("%w: unknown ciphertext version %d", ErrInvalid, ct[0])
	}
	switch {
	case len(ct) <= overhead:
		return fmt.Errorf("%w: ciphertext too short (%d bytes)", ErrInvalid, len(ct))
	case len(ct) > MaxPlaintextSize+overhead:
		return fmt.Errorf("%w: ciphertext is %d bytes, over the limit of %d", ErrInvalid, len(ct), MaxPlaintextSize+overhead)
	}
	return nil
}
