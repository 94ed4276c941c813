package soak

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"sync"
)

// Object names one Secret or ConfigMap.
type Object struct {
	Resource  string `json:"resource"` // secrets or configmaps
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (o Object) String() string { return o.Resource + "/" + o.Namespace + "/" + o.Name }

// Hash is the digest the history keeps of an object's data.
func Hash(data map[string][]byte) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write(data[k])
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Verdict is what a read of an object says about the history.
type Verdict string

const (
	// OK: the read is the last acknowledged write, or a write whose
	// outcome the writer did not learn since then.
	OK Verdict = "ok"
	// Lost: an acknowledged object is gone or holds data nobody wrote.
	Lost Verdict = "lost"
	// Stale: the read is an older acknowledged write of the object.
	Stale Verdict = "stale"
)

// History records every write of the run. A writer holds an object's
// lock (Lock) from before its request until it has recorded the outcome,
// and so does a reader around its read: a read is then checked against a
// settled history.
type History struct {
	mu   sync.Mutex
	objs map[Object]*record
}

type record struct {
	sync.Mutex
	acked   string          // hash of the last acknowledged write
	rv      string          // and the resourceVersion it came back with
	older   map[string]bool // hashes of earlier acknowledged writes
	pending []string        // writes after acked whose outcome is unknown
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{objs: map[Object]*record{}} }

func (h *History) rec(o Object) *record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.objs[o]
	if r == nil {
		r = &record{older: map[string]bool{}}
		h.objs[o] = r
	}
	return r
}

// Lock takes o's lock; the returned func releases it.
func (h *History) Lock(o Object) func() {
	r := h.rec(o)
	r.Lock()
	return r.Unlock
}

// Exists reports whether o has an acknowledged write (under o's lock).
func (h *History) Exists(o Object) bool { return h.rec(o).acked != "" }

// Acked records an acknowledged write of data (under o's lock).
func (h *History) Acked(o Object, data map[string][]byte, rv string) {
	r := h.rec(o)
	if r.acked != "" {
		r.older[r.acked] = true
	}
	r.acked, r.rv, r.pending = Hash(data), rv, nil
}

// Unknown records a write that failed without saying whether it was
// applied (under o's lock).
func (h *History) Unknown(o Object, data map[string][]byte) {
	r := h.rec(o)
	r.pending = append(r.pending, Hash(data))
}

// Check judges a read of o (under o's lock): found false for NotFound.
func (h *History) Check(o Object, found bool, data map[string][]byte) Verdict {
	r := h.rec(o)
	if !found {
		if r.acked == "" {
			return OK // only failed creates so far
		}
		return Lost
	}
	got := Hash(data)
	switch {
	case got == r.acked || slices.Contains(r.pending, got):
		return OK
	case r.older[got]:
		return Stale
	}
	return Lost
}

// Objects lists every object with an acknowledged write, sorted.
func (h *History) Objects() []Object {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Object
	for o, r := range h.objs {
		r.Lock()
		if r.acked != "" {
			out = append(out, o)
		}
		r.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// All lists every object written or tried, sorted.
func (h *History) All() []Object {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Object, 0, len(h.objs))
	for o := range h.objs {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// CanaryPrefix starts every secret value the soak writes (then 32 hex
// digits): no log and no raw etcd value may ever hold it.
const CanaryPrefix = "soakcanary-"

// Leaks returns the canaries found in text, whether or not a write the
// history knows of used them.
func Leaks(text []byte) []string {
	var out []string
	for rest := text; ; {
		i := bytes.Index(rest, []byte(CanaryPrefix))
		if i < 0 {
			return out
		}
		end := min(len(rest), i+len(CanaryPrefix)+32)
		out = append(out, string(rest[i:end]))
		rest = rest[end:]
	}
}
