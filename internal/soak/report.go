package soak

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Grace is how long after a fault's recovery a failed request still
// counts as the fault's: clients reconnect, kube-apiserver polls its
// plugin's Status every 60 s (docs/reliability.md).
const Grace = 30 * time.Second

// ConvergenceBound is how long after a rotation both nodes may take to
// report one key_id and write under it: kube-apiserver's 60 s Status poll
// plus one cross-read (docs/how-it-works.md#several-control-plane-nodes).
const ConvergenceBound = 150 * time.Second

// BucketWidth is the timeline's resolution.
const BucketWidth = 10 * time.Second

// Window is a fault from its start to its recovery, in seconds from the
// run's start. End is 0 while the fault lasts.
type Window struct {
	Kind    Kind     `json:"kind"`
	Targets []string `json:"targets"`
	Start   float64  `json:"start"`
	End     float64  `json:"end"`
	Note    string   `json:"note,omitempty"`
}

// Bucket counts requests that ended in [T, T+BucketWidth).
type Bucket struct {
	T      float64 `json:"t"`
	OK     int     `json:"ok"`
	Failed int     `json:"failed"`
}

// Failure is one failed request.
type Failure struct {
	T       float64 `json:"t"`
	Op      string  `json:"op"`
	Node    string  `json:"node"`
	Cause   string  `json:"cause"`
	InFault bool    `json:"inFault"`
}

// Convergence is how long the nodes took to agree after one rotation:
// both plugins on one key_id (Plugins), then writes through both
// kube-apiservers stored under it (Seconds), each from the rotation.
type Convergence struct {
	Rotation float64 `json:"rotation"` // when the rotating node took its new key_id
	Plugins  float64 `json:"pluginsSeconds"`
	Seconds  float64 `json:"seconds"`
	KeyID    string  `json:"keyID"`
}

// Report is the run's outcome, written as JSON and read by deploy/soakplot.
type Report struct {
	Seed               int64          `json:"seed"`
	Plan               string         `json:"plan"`            // the plan's digest: a replay has the same
	Duration           float64        `json:"durationSeconds"` // the run with load, without setup and final checks
	WritesAcked        int            `json:"writesAcked"`
	WritesUnknown      int            `json:"writesUnknown"`
	ReadsChecked       int            `json:"readsChecked"`
	Faults             map[Kind]int   `json:"faults"`
	Rotations          int            `json:"rotations"`
	Migrations         int            `json:"migrations"`
	Lost               int            `json:"lost"`
	Stale              int            `json:"stale"`
	FailedByCause      map[string]int `json:"failedByCause"`
	FailedOutside      int            `json:"failedOutsideWindows"`
	FailedByFault      map[string]int `json:"failedByFault"` // by the fault that most likely explains each (Attribute)
	Convergences       []Convergence  `json:"convergences"`
	StaleKeyIDs        int            `json:"staleKeyIDsAfterMigration"`
	Unencrypted        int            `json:"unencrypted"`
	LogLeaks           int            `json:"logLeaks"`
	Panics             int            `json:"panics"`
	RecoveredObjects   map[string]int `json:"recoveredObjects"` // by custodian pair
	RecoveryMismatches int            `json:"recoveryMismatches"`
	Problems           []string       `json:"problems"`
	Windows            []Window       `json:"windows"`
	Timeline           []Bucket       `json:"timeline"`
	Failures           []Failure      `json:"failures"`
}

// Recorder collects the run's events from every goroutine.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	r     Report
}

// NewRecorder starts the run's clock.
func NewRecorder(seed int64, start time.Time) *Recorder {
	return &Recorder{start: start, r: Report{Seed: seed, Faults: map[Kind]int{}, FailedByCause: map[string]int{}, RecoveredObjects: map[string]int{}}}
}

func (rec *Recorder) since(t time.Time) float64 { return t.Sub(rec.start).Seconds() }

// Update runs f on the report under the recorder's lock.
func (rec *Recorder) Update(f func(*Report)) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	f(&rec.r)
}

// Problem records a broken promise.
func (rec *Recorder) Problem(format string, args ...any) {
	rec.Update(func(r *Report) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) })
}

// FaultStarted opens a window and counts the fault; end closes it.
func (rec *Recorder) FaultStarted(kind Kind, targets []string, at time.Time) (end func(at time.Time, note string)) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.r.Faults[kind]++
	i := len(rec.r.Windows)
	rec.r.Windows = append(rec.r.Windows, Window{Kind: kind, Targets: targets, Start: rec.since(at)})
	return func(at time.Time, note string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.r.Windows[i].End, rec.r.Windows[i].Note = rec.since(at), note
	}
}

// Request records one API request's outcome; cause is "" for success.
func (rec *Recorder) Request(op, node string, at time.Time, cause string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s := rec.since(at)
	b := int(s / BucketWidth.Seconds())
	for len(rec.r.Timeline) <= b {
		rec.r.Timeline = append(rec.r.Timeline, Bucket{T: float64(len(rec.r.Timeline)) * BucketWidth.Seconds()})
	}
	if cause == "" {
		rec.r.Timeline[b].OK++
		return
	}
	rec.r.Timeline[b].Failed++
	rec.r.Failures = append(rec.r.Failures, Failure{T: s, Op: op, Node: node, Cause: cause})
}

// Finish closes open windows at end, sorts each failure into or out of
// the fault windows, and returns the report.
func (rec *Recorder) Finish(duration time.Duration, end time.Time) Report {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := &rec.r
	r.Duration = duration.Seconds()
	for i := range r.Windows {
		if r.Windows[i].End == 0 {
			r.Windows[i].End = rec.since(end)
		}
	}
	r.FailedOutside = 0
	r.FailedByFault = map[string]int{}
	for i := range r.Failures {
		f := &r.Failures[i]
		f.InFault = InWindow(r.Windows, f.T)
		r.FailedByCause[f.Cause]++
		blamed := Attribute(r.Windows, *f)
		if !f.InFault {
			r.FailedOutside++
			blamed = "none"
		}
		r.FailedByFault[blamed]++
	}
	return *r
}

// blame is the order in which faults are held to explain a failure: a
// process fault on the request's own node first, then a custodian fault.
var blame = []Kind{APIServerRestart, PluginKill, QuorumLost, CustodianKill, CustodianStop, Migration, RotateSIGHUP, RotateCommand}

// Attribute names the fault most likely to explain a failure: the first
// kind of [blame] with a window (and its grace) around it, a process
// fault counting only on the failed request's node; "" for none.
func Attribute(ws []Window, f Failure) string {
	for _, k := range blame {
		for _, w := range ws {
			onNode := k != APIServerRestart && k != PluginKill || len(w.Targets) == 1 && w.Targets[0] == f.Node
			if w.Kind == k && onNode && f.T >= w.Start && f.T <= w.End+Grace.Seconds() {
				return string(k)
			}
		}
	}
	if InWindow(ws, f.T) {
		return "other-node-process"
	}
	return ""
}

// InWindow reports whether t falls in a window or its grace.
func InWindow(ws []Window, t float64) bool {
	for _, w := range ws {
		if t >= w.Start && t <= w.End+Grace.Seconds() {
			return true
		}
	}
	return false
}

// Passed reports whether the run kept every promise.
func (r Report) Passed() bool {
	return r.Lost == 0 && r.Stale == 0 && r.FailedOutside == 0 && r.StaleKeyIDs == 0 && r.Unencrypted == 0 &&
		r.LogLeaks == 0 && r.Panics == 0 && r.RecoveryMismatches == 0 && len(r.Problems) == 0 && r.WritesAcked > 0
}

// Summary is the report's one line.
func (r Report) Summary() string {
	var kinds []string
	total := 0
	for _, k := range Kinds {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, r.Faults[k]))
		total += r.Faults[k]
	}
	var maxConv float64
	over := 0
	for _, c := range r.Convergences {
		maxConv = max(maxConv, c.Seconds)
		if c.Seconds > ConvergenceBound.Seconds() {
			over++
		}
	}
	verdict := "PASS"
	if !r.Passed() {
		verdict = "FAIL"
	}
	return fmt.Sprintf("soak %s seed=%d plan=%s duration=%s writes=%d reads=%d faults=%d (%s) rotations=%d migrations=%d max-convergence=%.0fs over-bound=%d lost=%d stale=%d failed=%d failed-outside-windows=%d unencrypted=%d log-leaks=%d panics=%d recovery-mismatches=%d problems=%d",
		verdict, r.Seed, r.Plan, time.Duration(r.Duration*float64(time.Second)).Round(time.Second), r.WritesAcked, r.ReadsChecked, total,
		strings.Join(kinds, " "), r.Rotations, r.Migrations, maxConv, over, r.Lost, r.Stale, len(r.Failures), r.FailedOutside,
		r.Unencrypted, r.LogLeaks, r.Panics, r.RecoveryMismatches, len(r.Problems))
}

// Causes lists the failure causes, most frequent first.
func (r Report) Causes() []string {
	var out []string
	for c := range r.FailedByCause {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return r.FailedByCause[out[i]] > r.FailedByCause[out[j]] })
	return out
}
