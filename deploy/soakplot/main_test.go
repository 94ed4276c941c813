package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderReport(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "report.json"), filepath.Join(dir, "soak.png")
	report := `{"seed": 3, "durationSeconds": 60,
		"windows": [{"kind": "quorum-lost", "start": 5, "end": 20}, {"kind": "migration", "start": 30, "end": 31}],
		"timeline": [{"t": 0, "ok": 40, "failed": 0}, {"t": 10, "ok": 20, "failed": 7}, {"t": 20, "ok": 41, "failed": 0}]}`
	if err := os.WriteFile(in, []byte(report), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(in, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("no PNG written (%v)", err)
	}
}

func TestRefuseWhatIsNotAReport(t *testing.T) {
	in := filepath.Join(t.TempDir(), "report.json")
	os.WriteFile(in, []byte("soak PASS seed=3"), 0o600)
	if err := run(in, filepath.Join(t.TempDir(), "x.png")); err == nil || !strings.Contains(err.Error(), in) {
		t.Fatalf("want an error naming %s, got %v", in, err)
	}
}
