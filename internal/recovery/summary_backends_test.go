package recovery

import (
	"context"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// TestAnUnwrapCalledOffIsNotAFailure: an unwrap cancelled because k
// other backends answered first is counted apart from failures, and the
// summary says so instead of "1 unwrap failed or cancelled".
func TestAnUnwrapCalledOffIsNotAFailure(t *testing.T) {
	kr := &Keyring{byName: map[string]*backendState{}}
	for _, name := range []string{"fast", "slow", "broken"} {
		st := &backendState{BackendStatus: BackendStatus{Name: name}}
		kr.status, kr.byName[name] = append(kr.status, st), st
	}
	obs := (*keyringObserver)(kr)
	src := kmsclients.Source{Backend: "local"}
	obs.BackendCall("fast", "unwrap", nil, 0)
	obs.BackendCall("slow", "unwrap", src.Fail(context.Background(), "unwrap", context.Canceled, context.Canceled), 0)
	obs.BackendCall("broken", "unwrap", src.Errorf("unwrap", kmsclients.ErrPermission, "no"), 0)

	var b strings.Builder
	(&Summary{Backends: kr.Status()}).writeBackends(&b)
	for _, want := range []string{
		"backend fast: used, unwrapped 1 share\n",
		"backend slow: not used, 1 unwrap not needed (called off: enough others answered first)\n",
		"backend broken: not used, 1 unwrap failed\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}
