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
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
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
func (s SnapshotFile) Scan(ctx context.Context, req ScanRequest) (out *Scan, err error) {
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
		w := &walk{ctx: ctx, prefix: []byte(normalizePrefix(req.Prefix)), keep: req.Keep, size: dbSize}
		return w.read(tx, req, out, s.SkipIntegrityCheck)
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

// walk reads the "key" bucket, which holds every revision of every key
// in revision order, not key order. It takes two passes, so that memory
// does not grow with the keys: the first finds the keys written more than
// once and their latest revision ([latest]), the second visits the latest
// revision of each live key.
type walk struct {
	ctx    context.Context
	prefix []byte
	keep   func(string) bool
	size   int64 // of the database, in bytes
	b      *bolt.Bucket
}

// minRecordSize is less than a record of the "key" bucket takes in the
// file, with its share of the page: it bounds the records a file holds.
const minRecordSize = 128

func (w *walk) read(tx *bolt.Tx, req ScanRequest, out *Scan, salvage bool) error {
	if err := guard(func() error { w.b = tx.Bucket(keyBucket); return nil }); err != nil {
		return err
	}
	if w.b == nil {
		return fmt.Errorf("%w: no %q bucket: not an etcd v3 snapshot", ErrCorruptSnapshot, keyBucket)
	}
	lt, err := w.latest(newKeyFilter(int(w.size / minRecordSize)))
	if err != nil && !(salvage && errors.Is(err, ErrCorruptSnapshot)) {
		return err
	}
	// On a damaged file the second pass stops where the first did, with
	// the same error.
	if req.Total != nil {
		req.Total(lt.live)
	}
	return w.visit(lt, req.Visit, out)
}

// latest is what the first pass learns.
type latest struct {
	seen *keyFilter
	// multi holds the keys met more than once (and the few that seen
	// mistook for such) at their latest revision: the keys written since
	// the last compaction.
	multi map[string]revision
	live  int // selected records that are not deletions: at least the keys to visit
}

func (w *walk) latest(seen *keyFilter) (*latest, error) {
	lt := &latest{seen: seen, multi: map[string]revision{}}
	err := w.each(func(k, v []byte) error {
		rev, err := parseRevision(k)
		key, ok := recordKey(v)
		if err != nil || !ok || !w.selected(key) {
			return nil
		}
		if !rev.tombstone {
			lt.live++
		}
		// Revisions come in order: the last one met is the latest.
		if lt.seen.add(key) {
			lt.multi[string(key)] = rev
		}
		return nil
	})
	return lt, err
}

func (w *walk) selected(key []byte) bool {
	return bytes.HasPrefix(key, w.prefix) && (w.keep == nil || w.keep(string(key)))
}

// visit passes the latest revision of each live selected key to visit.
func (w *walk) visit(lt *latest, visit func(KV) error, out *Scan) error {
	return w.each(func(k, v []byte) error {
		rev, err := parseRevision(k)
		if err != nil {
			out.Bad = append(out.Bad, BadRecord{Ref: fmt.Sprintf("record %x", k), Err: fmt.Errorf("%w: %v", ErrCorruptSnapshot, err)})
			return nil
		}
		out.Revision = max(out.Revision, rev.main)
		key, ok := recordKey(v)
		if !ok {
			out.Bad = append(out.Bad, BadRecord{Ref: rev.String(), Err: fmt.Errorf("%w: undecodable record", ErrCorruptSnapshot)})
			return nil
		}
		if last, ok := lt.multi[string(key)]; rev.tombstone || ok && last != rev || !w.selected(key) {
			return nil
		}
		var kv mvccpb.KeyValue
		if err := proto.Unmarshal(v, &kv); err != nil {
			out.Bad = append(out.Bad, BadRecord{Ref: rev.String(), Err: fmt.Errorf("%w: undecodable record", ErrCorruptSnapshot)})
			return nil
		}
		return visit(KV{Key: string(kv.Key), Value: kv.Value, ModRevision: kv.ModRevision})
	})
}

// each calls fn on every record, until fn fails.
func (w *walk) each(fn func(k, v []byte) error) error {
	return guard(func() error {
		n := 0
		c := w.b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if n++; n%4096 == 0 && w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// guard runs a read of the database: a fault or panic in bbolt (a
// damaged page) makes it fail with ErrCorruptSnapshot.
func guard(read func() error) (err error) {
	// A damaged page can point bbolt outside the mapped file: make that
	// a panic (recovered below), not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt failed while reading keys (%v)", ErrCorruptSnapshot, r)
		}
	}()
	return read()
}

// recordKey is the key of an mvccpb.KeyValue record (field 1, written
// first), read without decoding the rest.
func recordKey(b []byte) ([]byte, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			key, n := protowire.ConsumeBytes(b)
			return key, n >= 0 && len(key) > 0
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return nil, false
}
