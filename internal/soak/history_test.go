package soak

import (
	"reflect"
	"testing"
)

func TestHistoryJudgesReads(t *testing.T) {
	o := Object{Resource: "secrets", Namespace: "ns", Name: "a"}
	v1, v2, v3 := data("one"), data("two"), data("three")
	h := NewHistory()
	if got := h.Check(o, false, nil); got != OK {
		t.Fatalf("never written, not found: %s", got)
	}
	h.Unknown(o, v1)
	if got := h.Check(o, true, v1); got != OK {
		t.Fatalf("a create whose answer was lost, found: %s", got)
	}
	h.Acked(o, v1, "10")
	h.Acked(o, v2, "11")
	for _, c := range []struct {
		name  string
		found bool
		data  map[string][]byte
		want  Verdict
	}{
		{"the last acknowledged write", true, v2, OK},
		{"an older acknowledged write", true, v1, Stale},
		{"data never written", true, data("other"), Lost},
		{"not found", false, nil, Lost},
	} {
		if got := h.Check(o, c.found, c.data); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	h.Unknown(o, v3)
	if h.Check(o, true, v3) != OK || h.Check(o, true, v2) != OK {
		t.Fatal("after a write of unknown outcome, both it and the last acknowledged one must be accepted")
	}
	h.Acked(o, data("four"), "12")
	if got := h.Check(o, true, v3); got != Lost {
		t.Fatalf("a write of unknown outcome overwritten by an acknowledged one: %s, want lost", got)
	}
	if !reflect.DeepEqual(h.Objects(), []Object{o}) {
		t.Fatalf("objects: %v", h.Objects())
	}
}

func TestHashIgnoresKeyOrderOnly(t *testing.T) {
	a := map[string][]byte{"x": []byte("1"), "y": []byte("2")}
	b := map[string][]byte{"y": []byte("2"), "x": []byte("1")}
	c := map[string][]byte{"x": []byte("12"), "y": []byte("")}
	if Hash(a) != Hash(b) || Hash(a) == Hash(c) {
		t.Fatal("hash depends on order, or runs keys and values together")
	}
}

func TestLeaksFindsEveryCanary(t *testing.T) {
	c1, c2 := CanaryPrefix+"00112233445566778899aabbccddeeff", CanaryPrefix+"ffeeddccbbaa99887766554433221100"
	log := []byte("level=info msg=ok\nvalue=" + c1 + " x\n" + c2 + "\n" + CanaryPrefix + "short")
	if got := Leaks(log); !reflect.DeepEqual(got, []string{c1, c2, CanaryPrefix + "short"}) {
		t.Fatalf("leaks: %q", got)
	}
	if got := Leaks([]byte("nothing here")); got != nil {
		t.Fatalf("leaks in a clean log: %q", got)
	}
}

func data(v string) map[string][]byte { return map[string][]byte{"value": []byte(v)} }
