package grpcserver

import (
	"maps"
	"sync"
	"sync/atomic"
)

// maxKeyIDBytes bounds [keyIDs]: 150 of today's headers, few of the
// largest an attacker could store.
const maxKeyIDBytes = 64 << 10

// keyIDs remembers each parsed header's key_id, so a warm Decrypt skips
// parsing; a key_id depends on the header's bytes alone
// ([envelope.Header.KeyID]). Reads take no lock; when full, it starts over.
type keyIDs struct {
	mu   sync.Mutex // serialises add
	ids  atomic.Pointer[map[string]string]
	size int // header bytes in ids; guarded by mu
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
