package kmsclients

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Framing is the stored form of a backend's wrapped shares:
//
//	version (1 byte) | body (at least 1 byte) | CRC-32C of both, big-endian (4 bytes, if Checksum)
//
// at most [MaxWrappedSize] bytes. The checksum, for a KMS (or emulator)
// that does not authenticate every stored byte, catches corruption before
// a KMS call is spent; it is no defence against tampering.
type Framing struct {
	Version  byte
	Checksum bool
}

// ChecksumSize is the length of a frame's checksum.
const ChecksumSize = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame returns body framed; the caller keeps it within [MaxWrappedSize].
func (f Framing) Frame(body []byte) []byte {
	out := make([]byte, 0, 1+len(body)+f.trailer())
	out = append(out, f.Version)
	out = append(out, body...)
	if f.Checksum {
		out = binary.BigEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	}
	return out
}

// Unframe returns the body (a slice of wrapped) or why Frame did not make
// it, holding no byte of wrapped; report it as [ErrInvalidCiphertext].
func (f Framing) Unframe(wrapped []byte) ([]byte, error) {
	lo := 1 + 1 + f.trailer()
	if len(wrapped) < lo || len(wrapped) > MaxWrappedSize {
		return nil, fmt.Errorf("wrapped share of %d bytes: want %d to %d", len(wrapped), lo, MaxWrappedSize)
	}
	if wrapped[0] != f.Version {
		return nil, fmt.Errorf("wrapped share has format version %d, this build reads version %d", wrapped[0], f.Version)
	}
	end := len(wrapped) - f.trailer()
	if f.Checksum && crc32.Checksum(wrapped[:end], castagnoli) != binary.BigEndian.Uint32(wrapped[end:]) {
		return nil, errors.New("wrapped share is corrupt: its checksum does not match")
	}
	return wrapped[1:end], nil
}

func (f Framing) trailer() int {
	if f.Checksum {
		return ChecksumSize
	}
	return 0
}
