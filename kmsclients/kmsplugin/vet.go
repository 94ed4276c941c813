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

// vet checks, until it passes, that the custodian encrypts before any
// share is sent: neither answer to a random probe sent twice may reveal
// it. Equal answers are allowed (AES key wrap and AES-SIV are
// deterministic), but then a probe one byte apart must change at least
// minDiffusion bytes, or it is a byte-wise transform.
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

// sealProbe has the custodian encrypt probe as a share, returning the
// frame without checksum.
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
