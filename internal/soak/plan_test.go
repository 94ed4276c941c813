package soak

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestPlanReplaysFromSeed(t *testing.T) {
	a, b := NewPlan(42, time.Hour), NewPlan(42, time.Hour)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("one seed gave two schedules")
	}
	if reflect.DeepEqual(a.Lanes, NewPlan(43, time.Hour).Lanes) {
		t.Fatal("seeds 42 and 43 gave one schedule")
	}
	if a.Digest() != b.Digest() || a.Digest() == NewPlan(43, time.Hour).Digest() {
		t.Fatal("the digest does not name the schedule")
	}
	short := NewPlan(42, 3*time.Minute)
	for lane, faults := range short.Lanes {
		if !reflect.DeepEqual(faults, a.Lanes[lane][:len(faults)]) {
			t.Fatalf("lane %s: a shorter run of one seed is not the start of the longer one's schedule", lane)
		}
	}
}

// The custodian lane is the only one that takes custodians down, one
// fault at a time: at most n-k = 1 down, except in a QuorumLost.
func TestPlanTakesOneCustodianDownOutsideQuorumLost(t *testing.T) {
	for seed := range int64(20) {
		for lane, faults := range NewPlan(seed, time.Hour).Lanes {
			for _, f := range faults {
				custodian := f.Kind == CustodianStop || f.Kind == CustodianKill || f.Kind == QuorumLost
				if custodian != (lane == LaneCustodian) {
					t.Fatalf("seed %d: %s in lane %s", seed, f, lane)
				}
				switch {
				case f.Kind == QuorumLost && (len(f.Targets) != 2 || f.Targets[0] == f.Targets[1]):
					t.Fatalf("seed %d: %s does not take two custodians down", seed, f)
				case custodian && f.Kind != QuorumLost && len(f.Targets) != 1:
					t.Fatalf("seed %d: %s takes more than one custodian down", seed, f)
				case f.Kind == CustodianStop && f.Targets[0] == KeyFile:
					t.Fatalf("seed %d: %s stops a key file, which has no process", seed, f)
				}
			}
		}
	}
}

// What each kind takes beyond its gap and hold on a loaded machine,
// generously (the soak logs the real times).
var estimate = map[Kind]time.Duration{
	CustodianStop: time.Second, CustodianKill: 4 * time.Second, QuorumLost: 2 * time.Second,
	PluginKill: 5 * time.Second, APIServerRestart: 40 * time.Second,
	RotateSIGHUP: 90 * time.Second, RotateCommand: 90 * time.Second, Migration: 20 * time.Second,
}

// An hour's run reaches at least 300 faults and 10 of every kind, if the
// faults take what estimate says (docs/reliability.md has a real run's
// counts).
func TestHourPlanHasEnoughOfEveryKind(t *testing.T) {
	for seed := range int64(20) {
		c, total := map[Kind]int{}, 0
		for _, faults := range NewPlan(seed, time.Hour).Lanes {
			var spent time.Duration
			for _, f := range faults {
				if spent += f.Gap + f.Hold + estimate[f.Kind]; spent > time.Hour {
					break
				}
				c[f.Kind]++
			}
		}
		for _, k := range Kinds {
			if c[k] < 10 {
				t.Errorf("seed %d: %d %s faults", seed, c[k], k)
			}
			total += c[k]
		}
		if total < 300 {
			t.Errorf("seed %d: %d faults", seed, total)
		}
	}
}

func TestRanChecksTheScheduleOfARun(t *testing.T) {
	p := NewPlan(5, 10*time.Minute)
	var ws []Window
	for _, lane := range []string{LaneKey, LaneCustodian} {
		for _, f := range p.Lanes[lane][:3] {
			ws = append(ws, Window{Kind: f.Kind, Targets: f.Targets})
		}
	}
	if err := p.Ran(ws); err != nil {
		t.Fatal(err)
	}
	other := NewPlan(6, 10*time.Minute)
	if err := other.Ran(ws); err == nil {
		t.Fatal("another seed's plan accepts this run")
	}
	ws[1], ws[2] = ws[2], ws[1]
	if p.Lanes[LaneKey][1].Kind != p.Lanes[LaneKey][2].Kind || !slices.Equal(p.Lanes[LaneKey][1].Targets, p.Lanes[LaneKey][2].Targets) {
		if err := p.Ran(ws); err == nil {
			t.Fatal("faults run out of order pass")
		}
	}
}
