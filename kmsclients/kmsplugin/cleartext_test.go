package kmsplugin

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// encoders are what test and mock plugins make of a plaintext instead of
// encrypting it, with what the refusal must say.
var encoders = []struct {
	name   string
	encode func([]byte) []byte
	want   string
}{
	{"no-op", func(b []byte) []byte { return bytes.Clone(b) }, "asked to encrypt a random test plaintext, returned a ciphertext that holds it as it is"},
	{"base64 as Kubernetes' mock plugins", text(base64.StdEncoding.EncodeToString), "encoded as base64"},
	{"base64url unpadded after a prefix of letters", func(b []byte) []byte { return []byte("v1" + base64.RawURLEncoding.EncodeToString(b)) }, "encoded as base64"},
	{"base64 wrapped at 20 letters", func(b []byte) []byte { return wrapLines(base64.StdEncoding.EncodeToString(b), 20) }, "encoded as base64"},
	{"hex", text(hex.EncodeToString), "encoded as hex"},
	{"HEX", text(func(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }), "encoded as hex"},
	{"base32 in lower case", text(func(b []byte) string { return strings.ToLower(base32.StdEncoding.EncodeToString(b)) }), "encoded as base32"},
	{"base32hex", text(base32.HexEncoding.EncodeToString), "encoded as base32hex"},
	{"reversed", func(b []byte) []byte { return reversed(b) }, "reversed"},
	{"XOR 0x5a", xorKey([]byte{0x5a}), "XORed with a repeated 1-byte key"},
	{"plus 13", func(b []byte) []byte { return add(b, 13) }, "plus a repeated 1-byte key"},
	{"random 4-byte pad, XORed and base64", padded, "XORed with a repeated 4-byte key and encoded as base64"},
	{"substitution table", substitute, "transforms byte by byte"},
	{"XOR with a 64-byte key", xorKey(bytes.Repeat([]byte("0123456789abcdef"), 4)), "transforms byte by byte"},
}

// TestRefusesCustodiansThatDoNotEncrypt: a plugin that encodes, or
// transforms byte by byte, is refused at the first Wrap, before a share
// is sent, through either KMS API, saying what it does; once a real
// plugin is behind the socket, Wrap works.
func TestRefusesCustodiansThatDoNotEncrypt(t *testing.T) {
	for _, api := range []struct {
		name string
		opts []func(*Config)
	}{{"v2", nil}, {"v1", []func(*Config){withV1}}} {
		for _, e := range encoders {
			t.Run(api.name+"/"+e.name, func(t *testing.T) {
				srv := startFake(t)
				srv.kms.set(func(k *fakeKMS) { k.encode = e.encode })
				b := newTestBackend(t, "a", srv.endpoint(), api.opts...)
				ctx := ctxFor(t, 10*time.Second)
				_, err := b.Wrap(ctx, share(t), []byte("aad"))
				if err == nil || !strings.HasPrefix(err.Error(), "kmsplugin a: wrap: the plugin at "+srv.endpoint()) ||
					!strings.Contains(err.Error(), e.want) || !strings.Contains(err.Error(), "use a real KMS plugin") {
					t.Fatalf("Wrap: %v\nwant an error saying %q", err, e.want)
				}
				srv.kms.set(func(k *fakeKMS) { k.encode = nil })
				if _, err := b.Wrap(ctx, share(t), []byte("aad")); err != nil {
					t.Fatalf("Wrap once a real plugin is behind the socket: %v", err)
				}
			})
		}
	}
}

// TestEveryShareIsChecked: a plugin that encrypted the probes and
// encodes later is refused at the share it encodes.
func TestEveryShareIsChecked(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	ctx := ctxFor(t, 10*time.Second)
	if _, err := b.Wrap(ctx, share(t), []byte("aad")); err != nil {
		t.Fatal(err)
	}
	srv.kms.set(func(k *fakeKMS) { k.encode = text(base64.StdEncoding.EncodeToString) })
	_, err := b.Wrap(ctx, share(t), []byte("aad"))
	if err == nil || !strings.Contains(err.Error(), "asked to encrypt a share, returned a ciphertext that holds it encoded as base64") {
		t.Fatalf("Wrap through a plugin that now encodes: %v", err)
	}
}

// TestDeterministicEncryptionIsAccepted: a plugin that encrypts the same
// plaintext to the same ciphertext, but diffuses (as AES-SIV or AES key
// wrap do), is a custodian.
func TestDeterministicEncryptionIsAccepted(t *testing.T) {
	srv := startFake(t)
	srv.kms.set(func(k *fakeKMS) { k.sivLike = true })
	b := newTestBackend(t, "a", srv.endpoint())
	ctx := ctxFor(t, 10*time.Second)
	s := share(t)
	w1, err := b.Wrap(ctx, s, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := b.Wrap(ctx, s, []byte("aad"))
	if err != nil || !bytes.Equal(w1.Ciphertext, w2.Ciphertext) {
		t.Fatalf("the fake is not deterministic: %v", err)
	}
	if got, err := b.Unwrap(ctx, w1, []byte("aad")); err != nil || !bytes.Equal(got, s) {
		t.Fatalf("Unwrap: %v", err)
	}
}

// TestRevealFindsEveryField: the key_id and annotations, keys and values,
// are looked at as the ciphertext is; the field is named without the
// secret.
func TestRevealFindsEveryField(t *testing.T) {
	secret := share(t)
	hexed := hex.EncodeToString(secret)
	for _, tc := range []struct {
		s    sealed
		want string
	}{
		{sealed{ciphertext: noise(64), keyID: hexed}, "a key_id"},
		{sealed{ciphertext: noise(64), keyID: "k", annotations: map[string][]byte{"a.example.com": noise(8), "b.example.com": []byte(hexed)}}, `an annotation "b.example.com"`},
		{sealed{ciphertext: noise(64), keyID: "k", annotations: map[string][]byte{hexed + ".example.com": nil}}, "an annotation key"},
	} {
		r, ok := reveal(tc.s, secret)
		if !ok || r.field != tc.want || r.how != "encoded as hex" {
			t.Errorf("reveal: %+v, %v; want %s, encoded as hex", r, ok, tc.want)
		}
	}
}

// TestRevealNoFalseAlarm: random ciphertexts of the largest size, raw
// and as text in every encoding, do not reveal a random share.
func TestRevealNoFalseAlarm(t *testing.T) {
	for i := range 20 {
		ct := noise(kmsclients.MaxWrappedSize / 2)
		for _, b := range [][]byte{ct, []byte(base64.StdEncoding.EncodeToString(ct)), []byte(hex.EncodeToString(ct)), []byte(base32.StdEncoding.EncodeToString(ct))} {
			if r, ok := reveal(sealed{ciphertext: b}, share(t)); ok {
				t.Fatalf("round %d: a random ciphertext reveals a random share: %+v", i, r)
			}
		}
	}
}

// FuzzReveal: a secret put in any bytes, transformed and encoded as a
// plugin that does not encrypt would, is found; any bytes are read
// without panic.
func FuzzReveal(f *testing.F) {
	secret := bytes.Repeat([]byte{0, 1, 2, 0xfe, 0xff, 'A', '=', '\n'}, 4)
	for enc := range 16 {
		f.Add([]byte("prefix"), secret, []byte("suffix"), byte(enc), []byte{0x5a, 3})
	}
	f.Add([]byte("v1"), secret, []byte("AB"), byte(3<<4|1), []byte("key"))
	f.Fuzz(func(t *testing.T, prefix, secret, suffix []byte, how byte, key []byte) {
		reveal(sealed{ciphertext: prefix, keyID: string(suffix)}, secret)
		if len(secret) < minNeedle || len(prefix)+len(secret)+len(suffix) > kmsclients.MaxWrappedSize/2 {
			return
		}
		key = key[:min(len(key), maxKeyPeriod)]
		hidden := bytes.Clone(secret)
		if how&1 != 0 {
			hidden = reversed(hidden)
		}
		if how&2 != 0 {
			hidden = xorKey(key)(hidden)
		} else if len(key) > 0 {
			hidden = add(hidden, key[0])
		}
		encodings := []func([]byte) []byte{bytes.Clone, text(hex.EncodeToString), text(base64.StdEncoding.EncodeToString),
			text(base64.RawURLEncoding.EncodeToString), text(base32.StdEncoding.EncodeToString), text(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString)}
		hidden = encodings[int(how>>2)%len(encodings)](hidden)
		ct := append(append(bytes.Clone(prefix), hidden...), suffix...)
		if _, ok := reveal(sealed{ciphertext: ct}, secret); !ok {
			t.Fatalf("not found: %x in %q (how %d, key %x)", secret, ct, how, key)
		}
	})
}

func text(enc func([]byte) string) func([]byte) []byte {
	return func(b []byte) []byte { return []byte(enc(b)) }
}

func wrapLines(s string, n int) []byte {
	var out []byte
	for len(s) > n {
		out = append(append(out, s[:n]...), '\n')
		s = s[n:]
	}
	return append(out, s...)
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

func xorKey(key []byte) func([]byte) []byte {
	return func(b []byte) []byte {
		out := bytes.Clone(b)
		for i := range out {
			if len(key) > 0 {
				out[i] ^= key[i%len(key)]
			}
		}
		return out
	}
}

func add(b []byte, k byte) []byte {
	out := bytes.Clone(b)
	for i := range out {
		out[i] += k
	}
	return out
}

// padded is a one-time pad that is not: 4 random bytes, the plaintext
// XORed with them repeated, all in base64.
func padded(b []byte) []byte {
	pad := noise(4)
	return text(base64.StdEncoding.EncodeToString)(append(pad, xorKey(pad)(b)...))
}

// substitute maps each byte through a fixed permutation.
func substitute(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = c*167 + 13 // odd multiplier: a permutation of bytes
	}
	return out
}

func noise(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
