package recovery

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
)

// Headers reads every stored value under prefix (default [DefaultPrefix])
// and calls each with every distinct Trousseau header beside them, once,
// in the order first met: what an officer's air-gapped unwrap needs, with
// no object decrypted. h is only valid during the call: clone what is
// kept. Memory grows by a hash per distinct header, not with the values.
func Headers(ctx context.Context, src Source, prefix string, each func(h []byte)) (*Scan, error) {
	seen := map[[32]byte]bool{}
	visit := func(kv KV) error {
		h, ok := StoredHeader(kv.Value)
		if !ok {
			return nil
		}
		if sum := sha256.Sum256(h); !seen[sum] {
			seen[sum] = true
			each(h)
		}
		return nil
	}
	sc, err := src.Scan(ctx, ScanRequest{Prefix: normalizePrefix(cmp.Or(prefix, DefaultPrefix)), Visit: visit})
	if err != nil {
		return nil, fmt.Errorf("read headers: %w", err)
	}
	return sc, nil
}
