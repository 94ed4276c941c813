// Package soak is the chaos soak's bookkeeping: the fault plan drawn from a
// seed, the history of acknowledged writes that every read is checked
// against, and the report. The processes it runs against live in
// e2e/soak_test.go (build tag soak); this package has no I/O of its own,
// so that its rules are tested on their own.
package soak

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Kind is a kind of injected fault.
type Kind string

// The fault kinds, each counted in the report.
const (
	CustodianStop    Kind = "custodian-stop"    // SIGSTOP, then SIGCONT
	CustodianKill    Kind = "custodian-kill"    // SIGKILL and restart (the key file: moved away and back)
	QuorumLost       Kind = "quorum-lost"       // two custodians of three down at once
	PluginKill       Kind = "plugin-kill"       // SIGKILL and restart of one node's plugin
	APIServerRestart Kind = "apiserver-restart" // one node's kube-apiserver stopped and started
	RotateSIGHUP     Kind = "rotate-sighup"     // SIGHUP to one node's plugin
	RotateCommand    Kind = "rotate-command"    // `trousseau rotate` on one node
	Migration        Kind = "migration"         // every object read and rewritten through one node
)

// Kinds lists every fault kind, in the report's order.
var Kinds = []Kind{CustodianStop, CustodianKill, QuorumLost, PluginKill, APIServerRestart, RotateSIGHUP, RotateCommand, Migration}

// The custodians (2 of 3) and the nodes faults are aimed at.
const (
	Vault   = "vault"
	AWS     = "aws"
	KeyFile = "keyfile"
	Node1   = "node1"
	Node2   = "node2"
)

// Custodians are the three backends, in the plugin config's order.
var Custodians = []string{Vault, AWS, KeyFile}

// Lanes run side by side; the faults of one lane run one after another,
// which is what keeps at most one custodian down outside a QuorumLost.
const (
	LaneCustodian = "custodian"
	LaneProcess   = "process"
	LaneKey       = "key"
)

// Fault is one planned fault. Gap is the pause after the lane's previous
// fault ended; Hold how long a custodian stays down.
type Fault struct {
	Lane    string        `json:"lane"`
	Seq     int           `json:"seq"`
	Kind    Kind          `json:"kind"`
	Targets []string      `json:"targets"`
	Gap     time.Duration `json:"gap"`
	Hold    time.Duration `json:"hold,omitempty"`
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s#%d %s %v gap=%s", f.Lane, f.Seq, f.Kind, f.Targets, f.Gap)
	if f.Hold > 0 {
		s += fmt.Sprintf(" hold=%s", f.Hold)
	}
	return s
}

// Plan is every lane's sequence of faults, a function of the seed alone:
// replaying a seed replays the schedule. Real timings differ between runs
// (a restart takes what it takes); the order and parameters do not.
type Plan struct {
	Seed  int64              `json:"seed"`
	Lanes map[string][]Fault `json:"lanes"`
}

// NewPlan draws the faults of a run of duration d from seed: enough that
// the gaps and holds alone last d, so no lane runs dry however fast the
// faults themselves are.
func NewPlan(seed int64, d time.Duration) Plan {
	p := Plan{Seed: seed, Lanes: map[string][]Fault{}}
	for i, lane := range []struct {
		name string
		next func(*rand.Rand) []Fault
	}{{LaneCustodian, custodianFault}, {LaneProcess, processFault}, {LaneKey, keyFaults}} {
		r := rand.New(rand.NewPCG(uint64(seed), uint64(i)))
		var spent time.Duration
		for spent < d {
			for _, f := range lane.next(r) {
				f.Lane, f.Seq = lane.name, len(p.Lanes[lane.name])
				p.Lanes[lane.name] = append(p.Lanes[lane.name], f)
				spent += f.Gap + f.Hold
			}
		}
	}
	return p
}

func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return (lo + time.Duration(r.Int64N(int64(hi-lo)))).Round(100 * time.Millisecond)
}

func custodianFault(r *rand.Rand) []Fault {
	gap := between(r, 2*time.Second, 6*time.Second)
	switch x := r.IntN(10); {
	case x < 2:
		i := r.IntN(3)
		pair := []string{Custodians[i], Custodians[(i+1+r.IntN(2))%3]}
		return []Fault{{Kind: QuorumLost, Targets: pair, Gap: gap, Hold: between(r, 8*time.Second, 20*time.Second)}}
	case x < 6:
		// A key file has no process to stop.
		return []Fault{{Kind: CustodianStop, Targets: []string{Custodians[r.IntN(2)]}, Gap: gap, Hold: between(r, 3*time.Second, 10*time.Second)}}
	default:
		return []Fault{{Kind: CustodianKill, Targets: []string{Custodians[r.IntN(3)]}, Gap: gap, Hold: between(r, 2*time.Second, 8*time.Second)}}
	}
}

func node(r *rand.Rand) []string { return []string{[]string{Node1, Node2}[r.IntN(2)]} }

func processFault(r *rand.Rand) []Fault {
	kind := PluginKill
	if r.IntN(2) == 0 {
		kind = APIServerRestart
	}
	return []Fault{{Kind: kind, Targets: node(r), Gap: between(r, 8*time.Second, 25*time.Second)}}
}

// keyFaults is a rotation on one node and, every other time or so, a
// migration through either node once the nodes agree on the new key_id.
func keyFaults(r *rand.Rand) []Fault {
	kind := RotateSIGHUP
	if r.IntN(2) == 0 {
		kind = RotateCommand
	}
	out := []Fault{{Kind: kind, Targets: node(r), Gap: between(r, 5*time.Second, 15*time.Second)}}
	if r.IntN(5) < 4 {
		out = append(out, Fault{Kind: Migration, Targets: node(r), Gap: between(r, time.Second, 5*time.Second)})
	}
	return out
}

// Count is how many faults of each kind the plan holds.
func (p Plan) Count() map[Kind]int {
	c := map[Kind]int{}
	for _, faults := range p.Lanes {
		for _, f := range faults {
			c[f.Kind]++
		}
	}
	return c
}

// Digest names the schedule: two runs with one digest had one plan.
func (p Plan) Digest() string {
	b, _ := json.Marshal(p) // maps are marshalled in key order
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// laneOf is the lane each kind runs in.
var laneOf = map[Kind]string{
	CustodianStop: LaneCustodian, CustodianKill: LaneCustodian, QuorumLost: LaneCustodian,
	PluginKill: LaneProcess, APIServerRestart: LaneProcess,
	RotateSIGHUP: LaneKey, RotateCommand: LaneKey, Migration: LaneKey,
}

// Ran checks that the fault windows of a run, lane by lane, are the
// plan's first faults in order: what makes a seed a replay.
func (p Plan) Ran(ws []Window) error {
	next := map[string]int{}
	for _, w := range ws {
		lane, ok := laneOf[w.Kind]
		if !ok {
			continue
		}
		i := next[lane]
		next[lane]++
		if i >= len(p.Lanes[lane]) {
			return fmt.Errorf("lane %s ran %d faults, the plan has %d", lane, i+1, len(p.Lanes[lane]))
		}
		if f := p.Lanes[lane][i]; f.Kind != w.Kind || !slices.Equal(f.Targets, w.Targets) {
			return fmt.Errorf("lane %s fault %d ran %s %v, the plan says %s", lane, i, w.Kind, w.Targets, f)
		}
	}
	return nil
}
