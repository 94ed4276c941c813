package recovery

import "hash/maphash"

// keyFilter is a Bloom filter of keys, of a size fixed at the start.
type keyFilter struct {
	bits []uint64
	mask uint64
	seed maphash.Seed
}

const (
	filterBitsPerKey = 16
	filterProbes     = 4
	// maxFilterBits caps the filter at 64 MiB (32 million keys at 16
	// bits each); past that it errs more often, which costs memory in
	// [latest.multi], not correctness.
	maxFilterBits = 1 << 29
)

// newKeyFilter sizes a filter for n keys: about 1 in 400 new keys is
// taken for one seen before.
func newKeyFilter(n int) *keyFilter {
	m := uint64(1 << 16)
	for m < uint64(n)*filterBitsPerKey && m < maxFilterBits {
		m <<= 1
	}
	return &keyFilter{bits: make([]uint64, m/64), mask: m - 1, seed: maphash.MakeSeed()}
}

// add adds key and reports whether it may have been added before; it
// is never wrong when it says no.
func (f *keyFilter) add(key []byte) bool {
	h := maphash.Bytes(f.seed, key)
	h1, h2 := h&0xffffffff, h>>32|1
	seen := true
	for i := range uint64(filterProbes) {
		bit := (h1 + i*h2) & f.mask
		word, mask := bit/64, uint64(1)<<(bit%64)
		if f.bits[word]&mask == 0 {
			seen = false
			f.bits[word] |= mask
		}
	}
	return seen
}
