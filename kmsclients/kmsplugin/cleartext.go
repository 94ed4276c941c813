package kmsplugin

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
)

// A plugin that only encodes (a mock) would leave shares in etcd for
// anyone to decode. reveal finds a secret in its answer: as it is or
// reversed, XORed with or plus a key repeating every 1 to maxKeyPeriod
// bytes, raw or in hex, base64 or base32 text at any alignment. Other
// deterministic transforms fail the diffusion check of [Backend.vet].
const (
	// minNeedle bounds false alarms at 2^-43 (8 bytes of differences at
	// period 8, about 2^21 places). Shares are 35 bytes.
	minNeedle    = 16
	maxKeyPeriod = 8
)

// revealed says where a plugin's answer holds a secret, and how.
type revealed struct {
	field string // "a ciphertext", "a key_id", "an annotation key", "an annotation \"k\""
	how   string // "as it is", "XORed with a repeated 1-byte key and encoded as hex", ...
}

// reveal finds secret (at least minNeedle bytes) in s's fields.
func reveal(s sealed, secret []byte) (revealed, bool) {
	if len(secret) < minNeedle {
		return revealed{}, false
	}
	n := newNeedle(secret)
	for _, f := range s.fields() {
		if how := n.find(f.value); how != "" {
			return revealed{f.name, how}, true
		}
	}
	return revealed{}, false
}

type field struct {
	name  string
	value []byte
}

// fields are s's parts a plugin chooses, annotations in key order.
func (s sealed) fields() []field {
	out := []field{{"a ciphertext", s.ciphertext}, {"a key_id", []byte(s.keyID)}}
	keys := make([]string, 0, len(s.annotations))
	for k := range s.annotations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		// A key that holds the secret must not be quoted in the error.
		out = append(out, field{"an annotation key", []byte(k)}, field{"an annotation " + quote(k), s.annotations[k]})
	}
	return out
}

// find says how b holds the secret, in raw bytes or in text, or "".
func (n *needle) find(b []byte) string {
	if how := n.in(b); how != "" {
		return how
	}
	text := withoutSpace(b)
	for _, e := range textEncodings {
		switch how := e.search(text, n); how {
		case "":
		case "as it is":
			return "encoded as " + e.name
		default:
			return how + " and encoded as " + e.name
		}
	}
	return ""
}

// withoutSpace drops ASCII white space, which line-wrapped text has.
func withoutSpace(b []byte) []byte {
	return bytes.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, b)
}

// textEncoding decodes runs of its letters found in any bytes.
type textEncoding struct {
	name   string
	group  int   // letters that decode together
	tails  uint8 // bit r set: a final group of r letters decodes
	letter func(c byte) (byte, bool)
	decode func(dst, src []byte) (int, error)
}

var textEncodings = []textEncoding{
	{"hex", 2, 1 << 0, hexLetter, hex.Decode},
	{"base64", 4, 1<<0 | 1<<2 | 1<<3, base64Letter, base64.RawStdEncoding.Decode},
	{"base32", 8, base32Tails, base32Letter("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), base32.StdEncoding.WithPadding(base32.NoPadding).Decode},
	{"base32hex", 8, base32Tails, base32Letter("0123456789ABCDEFGHIJKLMNOPQRSTUV"), base32.HexEncoding.WithPadding(base32.NoPadding).Decode},
}

const base32Tails = 1<<0 | 1<<2 | 1<<4 | 1<<5 | 1<<7

// search decodes each run of e's letters from each offset in a group,
// so any alignment is found, and looks for n in the result.
func (e textEncoding) search(text []byte, n *needle) string {
	run := make([]byte, 0, len(text))
	buf := make([]byte, len(text))
	for i := 0; i <= len(text); i++ {
		if i < len(text) {
			if c, ok := e.letter(text[i]); ok {
				run = append(run, c)
				continue
			}
		}
		for shift := 0; shift < e.group && shift < len(run); shift++ {
			size, _ := e.decode(buf, e.trim(run[shift:]))
			if how := n.in(buf[:size]); how != "" {
				return how
			}
		}
		run = run[:0]
	}
	return ""
}

// trim drops the letters of a final group that cannot decode.
func (e textEncoding) trim(src []byte) []byte {
	for e.tails&(1<<(len(src)%e.group)) == 0 {
		src = src[:len(src)-1]
	}
	return src
}

func hexLetter(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		return c, true
	case 'A' <= c && c <= 'F':
		return c + 'a' - 'A', true
	}
	return 0, false
}

// base64Letter takes the standard and the URL alphabets alike.
func base64Letter(c byte) (byte, bool) {
	switch {
	case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
		return c, true
	case c == '-':
		return '+', true
	case c == '_':
		return '/', true
	}
	return 0, false
}

// base32Letter takes alphabet's letters in either case.
func base32Letter(alphabet string) func(c byte) (byte, bool) {
	return func(c byte) (byte, bool) {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		return c, bytes.IndexByte([]byte(alphabet), c) >= 0
	}
}

// keyOp is a byte-wise combination with a repeating key, found through
// differences at the key's period, which cancel the key out.
type keyOp struct {
	name string
	diff func(a, b byte) byte
}

var keyOps = [...]keyOp{
	{"XORed with", func(a, b byte) byte { return a ^ b }},
	{"plus", func(a, b byte) byte { return b - a }},
}

// needle is a secret, reversed too, with its differences per keyOp and
// period.
type needle struct {
	secret, reversed []byte
	diffs            [len(keyOps)][maxKeyPeriod + 1][2][]byte
}

func newNeedle(secret []byte) *needle {
	n := &needle{secret: secret, reversed: slices.Clone(secret)}
	slices.Reverse(n.reversed)
	for o, op := range keyOps {
		for p := 1; p <= maxKeyPeriod; p++ {
			n.diffs[o][p] = [2][]byte{lagDiff(n.secret, p, op.diff), lagDiff(n.reversed, p, op.diff)}
		}
	}
	return n
}

// in says how b holds the secret, or "".
func (n *needle) in(b []byte) string {
	if len(b) < len(n.secret) {
		return ""
	}
	for o, op := range keyOps {
		for p := 1; p <= maxKeyPeriod; p++ {
			hay := lagDiff(b, p, op.diff)
			for r, want := range [2][]byte{n.secret, n.reversed} {
				if at := bytes.Index(hay, n.diffs[o][p][r]); at >= 0 {
					keyed := !bytes.Equal(b[at:at+len(want)], want)
					return howTransformed(r == 1, keyed, op.name, p)
				}
			}
		}
	}
	return ""
}

func lagDiff(b []byte, lag int, diff func(a, b byte) byte) []byte {
	out := make([]byte, max(len(b)-lag, 0))
	for i := range out {
		out[i] = diff(b[i], b[i+lag])
	}
	return out
}

func howTransformed(reversed, keyed bool, op string, period int) string {
	switch {
	case !keyed && reversed:
		return "reversed"
	case !keyed:
		return "as it is"
	case reversed:
		return fmt.Sprintf("reversed and %s a repeated %d-byte key", op, period)
	}
	return fmt.Sprintf("%s a repeated %d-byte key", op, period)
}
