package grpcserver

import (
	"maps"
	"sync"
	"sync/atomic"
)

// maxKeyIDBytes bounds the headers [keyIDs] holds: 150 of today's,
// and few enough of the largest an attacker could store.
const maxKeyIDBytes = 64 << 10

// keyIDs remembers the key_id of each header parsed, so that a warm
// Decrypt checks its key_id without parsing the header again. A key_id
// is a function of the header's bytes alone (see [envelope.Header.KeyID]),
// so a remembered one is the one parsing would give. Reads take no lock
// (every Decrypt reads, a new DEK writes); when full, it starts over.
type keyIDs struct {
	mu  sync.Mutex // serialises add
	ids atomic.Pointer[map[string]string]
	// size is the bytes of header held in ids, guarded by mu.
	size int
}

func (c *keyIDs) get(header []byte) (string, bool) {
	ids := c.ids.Load()
	if ids == nil {
		return "", false
	}
	id, ok := (*ids)[string(header)]
	return id, ok
}

func (c *keyIDs) add(header []byte, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := map[string]string{}
	if old := c.ids.Load(); old != nil && c.size+len(header) <= maxKeyIDBytes {
		ids = maps.Clone(*old)
	} else {
		c.size = 0
	}
	ids[string(header)] = id
	c.size += len(header)
	c.ids.Store(&ids)
}
