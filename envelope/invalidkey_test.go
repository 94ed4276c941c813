package envelope

import (
	"context"
	"errors"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// TestAnUnusableKeyIsNotAnInvalidDEK: shares that could not be unwrapped
// because a backend's own key is unusable (a spoiled key file) may be
// fine once the key is put back: the DEK is unavailable, not invalid
// (which would have it set aside).
func TestAnUnusableKeyIsNotAnInvalidDEK(t *testing.T) {
	h := &Header{Threshold: 2, Shares: make([]WrappedShare, 3)}
	src := kmsclients.Source{Backend: "local"}
	failures := map[string]error{
		"a": src.Errorf("unwrap", kmsclients.ErrInvalidKey, "key file /a holds 9 bytes"),
		"b": src.Errorf("unwrap", kmsclients.ErrInvalidKey, "key file /b is a directory"),
	}
	qe := newQuorumError(context.Background(), h, failures, []string{"c"}, 0, false)
	if !errors.Is(qe, kmsclients.ErrUnavailable) || errors.Is(qe, ErrInvalid) {
		t.Fatalf("quorum error %v: want unavailable, not invalid", qe)
	}
}
