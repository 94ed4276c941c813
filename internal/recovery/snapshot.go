package recovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// ErrCorruptSnapshot reports a snapshot file that is truncated, damaged,
// or not an etcd snapshot at all.
var ErrCorruptSnapshot = errors.New("corrupt snapshot")

// minSnapshotSize is below the smallest bbolt file (four pages of at
// least 512 bytes); such a file would make bbolt try to initialise it.
const minSnapshotSize = 2048

// keyBucket is the bucket of etcd's backend that holds every revision of
// every key (go.etcd.io/etcd/server/v3/storage/schema).
var keyBucket = []byte("key")

// SnapshotFile reads a file written by `etcdctl snapshot save` (or a
// member's data-dir/member/snap/db, which lacks the checksum) directly:
// it is etcd's bbolt database, opened read-only; no etcd runs.
type SnapshotFile struct {
	Path string
	// SkipIntegrityCheck reads a snapshot whose checksum does not match,
	// or that is shorter than its database says, salvaging what can be
	// read. Every decrypted object is still authenticated by its own
	// encryption; what may be lost is which revision is the latest.
	SkipIntegrityCheck bool
	// LockTimeout bounds the wait for the file's lock (a running etcd
	// holds its own database locked). Default 5s.
	LockTimeout time.Duration
}

// Scan implements Source.
func (s SnapshotFile) Scan(ctx context.Context, prefix string, keep func(string) bool) (out *Scan, err error) {
	st, err := os.Stat(s.Path)
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("etcd snapshot %s: not a regular file", s.Path)
	}
	if st.Size() < minSnapshotSize {
		return nil, fmt.Errorf("%w: %s is %d bytes: too small to be an etcd snapshot (truncated?)", ErrCorruptSnapshot, s.Path, st.Size())
	}
	out = &Scan{Describe: "etcd snapshot " + s.Path}
	dbSize, check, err := s.verifyChecksum(st.Size())
	switch {
	case err != nil && !s.SkipIntegrityCheck:
		return nil, err
	case err != nil:
		out.Warnings = append(out.Warnings, err.Error()+" (salvaging what can be read)")
	}
	out.Describe += ", " + check
	db, err := s.open()
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if ps := int64(db.Info().PageSize); dbSize%ps != 0 {
		// bbolt files are whole pages; etcd adds exactly 32 bytes.
		perr := fmt.Errorf("%w: truncated: %d bytes is not a whole number of %d-byte pages, with or without etcd's checksum", ErrCorruptSnapshot, st.Size(), ps)
		if !s.SkipIntegrityCheck {
			return nil, perr
		}
		out.Warnings = append(out.Warnings, perr.Error()+" (salvaging what can be read)")
	}
	err = db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); need > dbSize {
			terr := fmt.Errorf("%w: truncated: the database needs %d bytes, the file holds %d", ErrCorruptSnapshot, need, dbSize)
			if !s.SkipIntegrityCheck {
				return terr
			}
			out.Warnings = append(out.Warnings, terr.Error()+" (salvaging what can be read)")
		}
		return readKeys(ctx, tx, normalizePrefix(prefix), keep, out)
	})
	switch {
	case err != nil && s.SkipIntegrityCheck && errors.Is(err, ErrCorruptSnapshot):
		out.Warnings = append(out.Warnings, err.Error()+": the read stopped there; what was read before is recovered, "+
			"but objects whose later revisions lay beyond it may be older versions, and deleted ones may be back")
	case err != nil:
		return nil, err
	}
	out.Damaged = len(out.Warnings) > 0
	return out, nil
}

// verifyChecksum checks the SHA-256 that etcd appends to a snapshot it
// streams (and that `etcdutl snapshot restore` checks). It returns the
// size of the database without it and what was checked.
func (s SnapshotFile) verifyChecksum(size int64) (int64, string, error) {
	// A bbolt file is whole pages; etcd's checksum adds 32 bytes, which
	// makes the size 32 mod 512 (the rule etcd's own tools use).
	if size%512 != sha256.Size {
		return size, "no checksum (a copy of a member's db file?)", nil
	}
	f, err := os.Open(s.Path)
	if err != nil {
		return 0, "", fmt.Errorf("etcd snapshot: %w", err)
	}
	defer f.Close()
	dbSize := size - sha256.Size
	h := sha256.New()
	if _, err := io.CopyN(h, f, dbSize); err != nil {
		return 0, "", fmt.Errorf("etcd snapshot: read: %w", err)
	}
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, want); err != nil {
		return 0, "", fmt.Errorf("etcd snapshot: read checksum: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return dbSize, "sha256 MISMATCH", fmt.Errorf("%w: the file's sha256 does not match the checksum etcd appended: it was damaged or truncated after it was saved", ErrCorruptSnapshot)
	}
	return dbSize, "sha256 verified", nil
}

// open opens the database read-only. bbolt panics on some damaged files;
// that is turned into an error.
func (s SnapshotFile) open() (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: unreadable database (%v)", ErrCorruptSnapshot, s.Path, r)
		}
	}()
	timeout := s.LockTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	db, err = bolt.Open(s.Path, 0o400, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolt.ErrTimeout):
		return nil, fmt.Errorf("etcd snapshot %s: locked by another process (a running etcd's own db file? copy it or take a snapshot)", s.Path)
	case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrVersionMismatch), errors.Is(err, bolt.ErrChecksum),
		strings.Contains(err.Error(), "file size too small"):
		return nil, fmt.Errorf("%w: %s is not an etcd snapshot, or is truncated or damaged (bbolt: %v)", ErrCorruptSnapshot, s.Path, err)
	}
	return nil, fmt.Errorf("etcd snapshot %s: %w", s.Path, err)
}

// readKeys walks every revision in order and keeps the latest of each
// key; a tombstone removes it. A fault or panic in bbolt (a damaged page)
// ends the walk with an error; out then holds what was read before it.
func readKeys(ctx context.Context, tx *bolt.Tx, prefix string, keep func(string) bool, out *Scan) (err error) {
	live := map[string]KV{}
	// A damaged page can point bbolt outside the mapped file: make that
	// a panic (recovered below), not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt failed while reading keys (%v)", ErrCorruptSnapshot, r)
		}
		out.KVs = sortedKVs(live)
	}()
	b := tx.Bucket(keyBucket)
	if b == nil {
		return fmt.Errorf("%w: no %q bucket: not an etcd v3 snapshot", ErrCorruptSnapshot, keyBucket)
	}
	pfx := []byte(prefix)
	n := 0
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		rev, err := parseRevision(k)
		if err != nil {
			out.Bad = append(out.Bad, BadRecord{Ref: fmt.Sprintf("record %x", k), Err: fmt.Errorf("%w: %v", ErrCorruptSnapshot, err)})
			continue
		}
		out.Revision = max(out.Revision, rev.main)
		var kv mvccpb.KeyValue
		if err := proto.Unmarshal(v, &kv); err != nil || len(kv.Key) == 0 {
			out.Bad = append(out.Bad, BadRecord{Ref: rev.String(), Err: fmt.Errorf("%w: undecodable record", ErrCorruptSnapshot)})
			continue
		}
		if !bytes.HasPrefix(kv.Key, pfx) {
			continue
		}
		key := string(kv.Key)
		if rev.tombstone {
			delete(live, key)
			continue
		}
		if keep != nil && !keep(key) {
			continue
		}
		live[key] = KV{Key: key, Value: kv.Value, ModRevision: kv.ModRevision}
	}
	return nil
}

func sortedKVs(m map[string]KV) []KV {
	out := make([]KV, 0, len(m))
	for _, kv := range m {
		out = append(out, kv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
