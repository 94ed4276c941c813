package recovery

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
)

// Headers reads every stored value under prefix (default [DefaultPrefix])
// and returns the distinct Trousseau headers beside them, in the order
// first met: what an officer's air-gapped unwrap needs, with no object
// decrypted. Memory grows with the distinct headers, not the values.
func Headers(ctx context.Context, src Source, prefix string) ([][]byte, *Scan, error) {
	var out [][]byte
	seen := map[[32]byte]bool{}
	visit := func(kv KV) error {
		h, ok := StoredHeader(kv.Value)
		if !ok {
			return nil
		}
		if sum := sha256.Sum256(h); !seen[sum] {
			seen[sum] = true
			out = append(out, bytes.Clone(h))
		}
		return nil
	}
	sc, err := src.Scan(ctx, ScanRequest{Prefix: normalizePrefix(cmp.Or(prefix, DefaultPrefix)), Visit: visit})
	if err != nil {
		return nil, nil, fmt.Errorf("read headers: %w", err)
	}
	return out, sc, nil
}
