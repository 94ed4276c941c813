package kmsplugin

import (
	"bytes"
	"context"
	"crypto/rand"

	"github.com/trousseau-io/trousseau/kmsclients"
)

const (
	probeAAD = "trousseau/kmsplugin/probe"
	// probeSize is a framed share's: the plugin cannot tell a probe.
	probeSize = 35
	// minDiffusion: one byte changed in a block cipher's input changes
	// its whole 16-byte block, and at most 3 letters of an encoding.
	minDiffusion = 8
)

// vet checks, at the first Wrap and until it passes, that the custodian
// encrypts, before any share is sent: a random probe sent twice must not
// be revealed by either answer. Equal answers alone are no proof of
// an encoding (AES key wrap in an HSM, AES-SIV, Vault's convergent keys
// are deterministic, and no two plaintexts Wrap sends are equal), so then
// a probe one byte apart must change at least minDiffusion bytes of the
// answer: fewer is a byte-by-byte transform, not encryption.
func (b *Backend) vet(ctx context.Context) error {
	if b.vetted.Load() {
		return nil
	}
	probe := make([]byte, probeSize)
	rand.Read(probe)
	first, err := b.sealProbe(ctx, probe)
	if err != nil {
		return err
	}
	again, err := b.sealProbe(ctx, probe)
	if err != nil {
		return err
	}
	if bytes.Equal(first, again) {
		probe[len(probe)/2] ^= 0xff
		other, err := b.sealProbe(ctx, probe)
		if err != nil {
			return err
		}
		if n := changed(first, other); n >= 0 && n < minDiffusion {
			return b.src.Errorf(kmsclients.OpWrap, nil, "the plugin at %s transforms byte by byte: it answered the same for the same plaintext, and a plaintext one byte apart changed only %d of the answer's bytes (a block cipher changes a whole block): it does not encrypt; use a real KMS plugin", b.endpoint, n)
		}
	}
	b.vetted.Store(true)
	return nil
}

// sealProbe has the custodian encrypt probe as it would a share and
// returns its answer as stored, without the checksum.
func (b *Backend) sealProbe(ctx context.Context, probe []byte) ([]byte, error) {
	s, err := b.encrypt(ctx, bind(probe, []byte(probeAAD)))
	if err != nil {
		return nil, err
	}
	raw, err := b.frame(s, probe, "a random test plaintext")
	if err != nil {
		return nil, err
	}
	return raw[:len(raw)-kmsclients.ChecksumSize], nil
}

// frame is the custodian's answer as stored, unless it cannot be stored
// or reveals secret, named by what.
func (b *Backend) frame(s sealed, secret []byte, what string) ([]byte, error) {
	raw, err := s.marshal()
	if err != nil {
		return nil, b.src.Errorf(kmsclients.OpWrap, nil, "the custodian's answer cannot be stored: %w", err)
	}
	if r, ok := reveal(s, secret); ok {
		return nil, b.src.Errorf(kmsclients.OpWrap, nil, "the plugin at %s, asked to encrypt %s, returned %s that holds it %s: it does not encrypt, and shares would sit in etcd in the clear; use a real KMS plugin", b.endpoint, what, r.field, r.how)
	}
	return raw, nil
}

// changed counts the bytes where a and b differ, or is -1 if their
// lengths do.
func changed(a, b []byte) int {
	if len(a) != len(b) {
		return -1
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
