package grpcserver

import "sync"

// maxKeyIDBytes bounds the headers [keyIDs] holds: a few hundred of
// today's, and few enough of the largest an attacker could store.
const maxKeyIDBytes = 256 << 10

// keyIDs remembers the key_id of each header parsed, so that a warm
// Decrypt checks its key_id without parsing the header again. A key_id
// is a function of the header's bytes alone (see [envelope.Header.KeyID]),
// so a remembered one is the one parsing would give. When full, it
// starts over.
type keyIDs struct {
	mu   sync.RWMutex
	ids  map[string]string
	size int
}

func (c *keyIDs) get(header []byte) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	id, ok := c.ids[string(header)]
	return id, ok
}

func (c *keyIDs) add(header []byte, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || c.size+len(header) > maxKeyIDBytes {
		c.ids, c.size = map[string]string{}, 0
	}
	c.ids[string(header)] = id
	c.size += len(header)
}
