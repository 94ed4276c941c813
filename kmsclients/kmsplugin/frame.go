package kmsplugin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// framing wraps the stored share (big-endian, one encoding per share):
//
//	api          1 byte: apiV2 or apiV1
//	key_id       u16 length, bytes (v1: empty)
//	ciphertext   u16 length, bytes
//	annotations  u8 count, then in increasing key order:
//	             u8 length, key, u16 length, value
//
// The checksum catches corrupt storage, not tampering: the custodian's
// encryption and the binding do that. See docs/backends/kmsplugin.md.
var framing = kmsclients.Framing{Version: 1, Checksum: true}

const (
	apiV1 = 1
	apiV2 = 2

	// maxKeyID is the KMS v2 contract's limit on a key_id.
	maxKeyID = 1024
	// maxAnnotationKey is the longest DNS subdomain.
	maxAnnotationKey = 253
	maxAnnotations   = 255
	// minFrame: version, api, two lengths, a count, the checksum.
	minFrame = 2 + 2 + 2 + 1 + kmsclients.ChecksumSize
)

// sealed is what a custodian returned for one share.
type sealed struct {
	api         byte
	keyID       string
	ciphertext  []byte
	annotations map[string][]byte
}

// marshal encodes s, refusing what does not fit the format.
func (s sealed) marshal() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(s.annotations))
	size := minFrame + len(s.keyID) + len(s.ciphertext)
	for k, v := range s.annotations {
		keys = append(keys, k)
		size += 1 + len(k) + 2 + len(v)
	}
	if size > kmsclients.MaxWrappedSize {
		return nil, fmt.Errorf("key_id, ciphertext and annotations take %d bytes stored, over the limit of %d", size, kmsclients.MaxWrappedSize)
	}
	slices.Sort(keys)
	out := make([]byte, 0, size)
	out = append(out, s.api)
	out = binary.BigEndian.AppendUint16(out, uint16(len(s.keyID)))
	out = append(out, s.keyID...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(s.ciphertext)))
	out = append(out, s.ciphertext...)
	out = append(out, byte(len(keys)))
	for _, k := range keys {
		out = append(out, byte(len(k)))
		out = append(out, k...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(s.annotations[k])))
		out = append(out, s.annotations[k]...)
	}
	return framing.Frame(out), nil
}

// check refuses an answer that breaks the KMS contract or cannot be
// stored. Sizes past the u16 lengths are left to marshal's total limit.
func (s sealed) check() error {
	switch {
	case s.api != apiV1 && s.api != apiV2:
		return fmt.Errorf("unknown KMS API %d", s.api)
	case s.api == apiV2 && s.keyID == "":
		return errors.New("empty key_id")
	case s.api == apiV1 && (s.keyID != "" || len(s.annotations) > 0):
		return errors.New("a KMS v1 share has no key_id or annotations")
	case len(s.keyID) > maxKeyID:
		return fmt.Errorf("key_id of %d bytes, over the limit of %d", len(s.keyID), maxKeyID)
	case !utf8.ValidString(s.keyID):
		return errors.New("key_id is not UTF-8")
	case len(s.ciphertext) == 0:
		return errors.New("empty ciphertext")
	case len(s.ciphertext) > kmsclients.MaxWrappedSize:
		return fmt.Errorf("ciphertext of %d bytes, over the limit of %d", len(s.ciphertext), kmsclients.MaxWrappedSize)
	case len(s.annotations) > maxAnnotations:
		return fmt.Errorf("%d annotations, over the limit of %d", len(s.annotations), maxAnnotations)
	}
	for k, v := range s.annotations {
		switch {
		case k == "" || len(k) > maxAnnotationKey || !utf8.ValidString(k):
			return fmt.Errorf("annotation key of %d bytes: want 1 to %d bytes of UTF-8", len(k), maxAnnotationKey)
		case len(v) > kmsclients.MaxWrappedSize:
			return fmt.Errorf("annotation %q of %d bytes, over the limit of %d", k, len(v), kmsclients.MaxWrappedSize)
		}
	}
	return nil
}

// unmarshal parses a stored share, accepting only what marshal makes.
func unmarshal(b []byte) (sealed, error) {
	body, err := framing.Unframe(b)
	if err != nil {
		return sealed{}, err
	}
	r := reader{buf: body[1:]}
	s := sealed{api: body[0]}
	s.keyID = string(r.bytes(r.u16()))
	s.ciphertext = slices.Clone(r.bytes(r.u16()))
	n := int(r.u8())
	prev := ""
	for i := range n {
		k := string(r.bytes(int(r.u8())))
		v := r.bytes(r.u16())
		if r.bad || (i > 0 && k <= prev) {
			return sealed{}, errMalformed
		}
		if s.annotations == nil {
			s.annotations = make(map[string][]byte, n)
		}
		s.annotations[k] = slices.Clone(v)
		prev = k
	}
	if r.bad || len(r.buf) != 0 {
		return sealed{}, errMalformed
	}
	if err := s.check(); err != nil {
		return sealed{}, fmt.Errorf("wrapped share holds %w", err)
	}
	return s, nil
}

var errMalformed = errors.New("malformed wrapped share: its fields do not add up to the frame")

// reader reads the frame's fields; past the end it returns nothing and
// sets bad.
type reader struct {
	buf []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.buf) {
		r.bad = true
		return nil
	}
	out := r.buf[:n]
	r.buf = r.buf[n:]
	return out
}

func (r *reader) u8() byte {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

// The plaintext sent is binding || share, binding being
// SHA-256(bindingLabel || aad)[:16]: a custodian (or etcd writer) handing
// back another share's plaintext fails the constant-time comparison.
const (
	bindingLabel = "trousseau/kmsplugin/aad-binding/v1\x00"
	bindingSize  = 16
)

func binding(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindingLabel))
	h.Write(aad)
	return h.Sum(nil)[:bindingSize]
}

// bind is the plaintext sent to the custodian for share.
func bind(share, aad []byte) []byte {
	return append(binding(aad), share...)
}

// unbind returns a copy of the share if plaintext is bound to aad.
func unbind(plaintext, aad []byte) ([]byte, bool) {
	if len(plaintext) <= bindingSize {
		return nil, false
	}
	if subtle.ConstantTimeCompare(plaintext[:bindingSize], binding(aad)) != 1 {
		return nil, false
	}
	return slices.Clone(plaintext[bindingSize:]), true
}
