package grpcserver

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// The pacer runs one handler at a time, starts interval apart: requests
// on every open connection cost at most one goroutine's CPU.
func TestPacerRunsHandlersOneAtATime(t *testing.T) {
	const interval = 5 * time.Millisecond
	var mu sync.Mutex
	running, most := 0, 0
	var starts []time.Time
	p := newPacer(interval)
	h := p.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		mu.Lock()
		running++
		most = max(most, running)
		starts = append(starts, p.last) // set as this handler was let in
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
	}))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/livez", nil)) })
	}
	wg.Wait()
	if most != 1 || len(starts) != 20 {
		t.Fatalf("%d handlers ran at once, %d in all", most, len(starts))
	}
	for i := 1; i < len(starts); i++ {
		if d := starts[i].Sub(starts[i-1]); d < interval {
			t.Errorf("handler %d started %s after the one before, want at least %s", i, d, interval)
		}
	}
}
