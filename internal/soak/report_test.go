package soak

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFailuresOutsideFaultWindowsAreCounted(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	rec := NewRecorder(7, start)
	end := rec.FaultStarted(APIServerRestart, []string{Node1}, at(10))
	rec.Request("write", Node1, at(12), "connection-refused") // in the window
	end(at(40), "")
	rec.Request("write", Node1, at(40+Grace.Seconds()-1), "timeout") // in the grace
	rec.Request("read", Node2, at(40+Grace.Seconds()+5), "timeout")  // outside
	rec.Request("read", Node2, at(200), "")
	rec.FaultStarted(QuorumLost, []string{Vault, AWS}, at(300)) // never closed
	rec.Request("write", Node2, at(305), "internal-error")
	// Node 1's kube-apiserver restarting does not explain a failure on
	// node 2, but the quorum lost does.
	rec.FaultStarted(APIServerRestart, []string{Node1}, at(306))
	rec.Request("write", Node2, at(307), "kms-transform")

	r := rec.Finish(5*time.Minute, at(310))
	if r.FailedOutside != 1 || r.FailedByCause["timeout"] != 2 || len(r.Failures) != 5 {
		t.Fatalf("outside %d, by cause %v, failures %d", r.FailedOutside, r.FailedByCause, len(r.Failures))
	}
	want := map[string]int{"apiserver-restart": 2, "none": 1, "quorum-lost": 2}
	if !reflect.DeepEqual(r.FailedByFault, want) {
		t.Fatalf("failures by fault: %v, want %v", r.FailedByFault, want)
	}
	if r.Windows[1].End != 310 || r.Windows[2].End != 310 {
		t.Fatalf("an open window ends at the finish: %v", r.Windows[1])
	}
	if r.Passed() || !strings.Contains(r.Summary(), "failed-outside-windows=1") || !strings.HasPrefix(r.Summary(), "soak FAIL") {
		t.Fatalf("a failure outside a window passes: %s", r.Summary())
	}
	if got := r.Timeline[20]; got.OK != 1 || got.T != 200 {
		t.Fatalf("timeline bucket at 200 s: %+v", got)
	}
}

func TestCleanRunPasses(t *testing.T) {
	rec := NewRecorder(1, time.Now())
	rec.Update(func(r *Report) { r.WritesAcked = 3 })
	r := rec.Finish(time.Minute, time.Now())
	if !r.Passed() || !strings.Contains(r.Summary(), "lost=0 stale=0") {
		t.Fatalf("%s", r.Summary())
	}
	rec.Update(func(r *Report) {
		r.Convergences = []Convergence{{Seconds: 60}, {Seconds: ConvergenceBound.Seconds() + 1}}
	})
	if s := rec.Finish(time.Minute, time.Now()).Summary(); !strings.Contains(s, "max-convergence=151s over-bound=1") {
		t.Fatalf("a convergence over the bound is not in the summary: %s", s)
	}
	rec.Problem("lost: x")
	if rec.Finish(time.Minute, time.Now()).Passed() {
		t.Fatal("a run with a problem passes")
	}
}
