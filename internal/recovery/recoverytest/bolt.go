package recoverytest

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// BoltSnapshot writes a file laid out as etcd's backend (the "key"
// bucket: one record per revision, keyed by it) with no etcd running:
// for snapshots too large to write through etcd in a test. Each Put and
// Delete is the next revision.
type BoltSnapshot struct {
	db  *bolt.DB
	tx  *bolt.Tx
	rev int64
}

// boltBatch is how many records one transaction writes.
const boltBatch = 20000

// NewBoltSnapshot creates path.
func NewBoltSnapshot(path string) (*BoltSnapshot, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true})
	if err != nil {
		return nil, err
	}
	s := &BoltSnapshot{db: db}
	if err := s.begin(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *BoltSnapshot) begin() error {
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists([]byte("key")); err != nil {
		tx.Rollback()
		return err
	}
	s.tx = tx
	return nil
}

// Put writes key's next value.
func (s *BoltSnapshot) Put(key string, value []byte) error {
	return s.record(key, value, false)
}

// Delete writes key's tombstone.
func (s *BoltSnapshot) Delete(key string) error {
	return s.record(key, nil, true)
}

func (s *BoltSnapshot) record(key string, value []byte, tombstone bool) error {
	s.rev++
	rk := make([]byte, 17, 18)
	binary.BigEndian.PutUint64(rk, uint64(s.rev))
	rk[8] = '_'
	if tombstone {
		rk = append(rk, 't')
	}
	kv := mvccpb.KeyValue{Key: []byte(key), Value: value, CreateRevision: s.rev, ModRevision: s.rev, Version: 1}
	rec, err := proto.Marshal(&kv)
	if err != nil {
		return err
	}
	b := s.tx.Bucket([]byte("key"))
	b.FillPercent = 1 // revisions only grow: pack the pages
	if err := b.Put(rk, rec); err != nil {
		return fmt.Errorf("bolt snapshot: %w", err)
	}
	if s.rev%boltBatch == 0 {
		if err := s.tx.Commit(); err != nil {
			return err
		}
		return s.begin()
	}
	return nil
}

// Close commits and closes the file.
func (s *BoltSnapshot) Close() error {
	if err := s.tx.Commit(); err != nil {
		s.db.Close()
		return err
	}
	return s.db.Close()
}
