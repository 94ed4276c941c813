package recovery

import (
	"context"
	"encoding/binary"
	"fmt"
)

// KV is one live key of etcd, at its latest revision.
type KV struct {
	Key         string
	Value       []byte
	ModRevision int64
}

// BadRecord is a record of the store that could not be read; Ref names
// it (its key when known, else its revision).
type BadRecord struct {
	Ref string
	Err error
}

// Scan is what a Source read, besides the keys it passed to
// [ScanRequest.Visit].
type Scan struct {
	// Bad lists records that could not be decoded; the others were read.
	Bad []BadRecord
	// Revision is the store's revision at the time of the read.
	Revision int64
	// Describe says what was read, for the summary ("snapshot FILE,
	// sha256 verified").
	Describe string
	// Warnings are problems that did not stop the read (an integrity
	// check skipped on request).
	Warnings []string
	// Damaged is set when the source failed an integrity check and was
	// read anyway: the run fails even if every object was recovered.
	Damaged bool
}

// ScanRequest says what to read and where each key goes.
type ScanRequest struct {
	Prefix string
	// Keep, if set, selects keys: the others are not visited.
	Keep func(key string) bool
	// Total, if set, is called once before the first Visit with the
	// number of keys the read expects to visit (at most; 0 if unknown).
	Total func(n int)
	// Visit gets each live key with its latest value, one at a time; the
	// KV is its own (not reused). An error stops the read, and Scan
	// returns it.
	Visit func(KV) error
}

// A Source reads the live keys of an etcd keyspace under a prefix: a
// snapshot file or a running etcd. It streams: memory does not grow
// with the number of keys.
type Source interface {
	// Scan visits every live key under req.Prefix that req.Keep keeps. An
	// error means the read did not finish: what was visited before it
	// may be incomplete.
	Scan(ctx context.Context, req ScanRequest) (*Scan, error)
}

// revision is an etcd MVCC revision: the key of a record in the
// snapshot's "key" bucket (go.etcd.io/etcd/server/v3/storage/mvcc,
// revision.go): main and sub, big-endian, joined by '_', and a trailing
// 't' for a deletion (tombstone).
type revision struct {
	main, sub int64
	tombstone bool
}

const (
	revBytesLen       = 8 + 1 + 8
	markedRevBytesLen = revBytesLen + 1
	markTombstone     = 't'
)

func parseRevision(b []byte) (revision, error) {
	if (len(b) != revBytesLen && len(b) != markedRevBytesLen) || b[8] != '_' {
		return revision{}, fmt.Errorf("malformed revision key (%d bytes)", len(b))
	}
	r := revision{main: int64(binary.BigEndian.Uint64(b[:8])), sub: int64(binary.BigEndian.Uint64(b[9:17]))}
	if len(b) == markedRevBytesLen {
		if b[revBytesLen] != markTombstone {
			return revision{}, fmt.Errorf("revision key with unknown mark %q", b[revBytesLen])
		}
		r.tombstone = true
	}
	if r.main < 0 || r.sub < 0 {
		return revision{}, fmt.Errorf("negative revision")
	}
	return r, nil
}

func (r revision) String() string {
	s := fmt.Sprintf("revision %d_%d", r.main, r.sub)
	if r.tombstone {
		s += "t"
	}
	return s
}
