package envelope

import (
	"maps"
	"sync"
)

// probeView is the key identity of each backend that answered the last
// probe: recovery skips waiting for the rest, adoption refuses other keys.
type probeView struct {
	mu        sync.RWMutex
	observed  map[string]string // nil before the first probe
	gapLogged string            // the [AuthenticationGap] last logged
}

// update records a probe's view and reports whether it changed.
func (p *probeView) update(observed map[string]string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := !maps.Equal(p.observed, observed)
	p.observed = maps.Clone(observed)
	return changed
}

// keys returns the last view; the caller must not change it.
func (p *probeView) keys() map[string]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.observed
}

// anyUp reports whether any of names answered the last probe (all are
// up before the first).
func (p *probeView) anyUp(names map[string]bool) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.observed == nil {
		return len(names) > 0
	}
	for n := range names {
		if _, up := p.observed[n]; up {
			return true
		}
	}
	return false
}

// gapChanged records gap and reports whether it differs from the last.
func (p *probeView) gapChanged(gap string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := gap != p.gapLogged
	p.gapLogged = gap
	return changed
}
